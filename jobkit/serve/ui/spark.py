"""Throughput sparklines: finished jobs per minute, drawn as the points of an SVG polyline."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["per_minute", "points"]


def per_minute(finished_at: Iterable[float | None], now: float, minutes: int = 30) -> list[int]:
    """How many of the given finish times fall in each of the last `minutes` minutes, oldest minute first."""
    counts = [0] * minutes
    start = now - 60 * minutes
    for at in finished_at:
        if at is not None and start <= at <= now:
            counts[min(minutes - 1, math.floor((at - start) / 60))] += 1
    return counts


def points(series: Sequence[float], width: int = 120, height: int = 24) -> str:
    """"x,y x,y ..." for an SVG polyline `width` x `height` (0 at the bottom, the series' peak at the top)."""
    if not series:
        return ""
    peak = max(series) or 1
    step = width / max(1, len(series) - 1)
    return " ".join(f"{i * step:.1f},{height - 1 - (height - 2) * v / peak:.1f}" for i, v in enumerate(series))
