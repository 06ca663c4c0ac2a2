"""Throughput sparklines: a per-minute series drawn as the points of an SVG polyline."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["points"]


def points(series: Sequence[float], width: int = 120, height: int = 24) -> str:
    """"x,y x,y ..." for an SVG polyline `width` x `height` (0 at the bottom, the series' peak at the top)."""
    if not series:
        return ""
    peak = max(series) or 1
    step = width / max(1, len(series) - 1)
    return " ".join(f"{i * step:.1f},{height - 1 - (height - 2) * v / peak:.1f}" for i, v in enumerate(series))
