"""The parent's merge: the partitions' rows as one result, and totals per group over the whole range.

count, sum, min and max of a group merge from its partitions' values; an average from the hidden sums and
counts each partition returns (never an average of averages). Distinct counts and percentiles do not merge
from partition values, so the totals read them again from the source, exactly, over the completed partitions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .models import Aggregate, Metric, PartitionResult

__all__ = ["MERGEABLE", "merged_rows", "merged_totals", "spans"]

MERGEABLE = frozenset({"count", "sum", "min", "max", "avg"})


def merged_rows(p: Aggregate, parts: Sequence[PartitionResult]) -> list[dict[str, Any]]:
    """Every partition's rows, without the hidden columns, by period then group."""
    keep = 1 + len(p.group_by) + len(p.metrics)
    rows = [row[:keep] for part in parts for row in part.rows]
    instants = {label: dt.datetime.fromisoformat(label) for label in {row[0] for row in rows}}
    rows.sort(key=lambda row: (instants[row[0]], *map(_order, row[1:1 + len(p.group_by)])))
    names = parts[0].columns[:keep] if parts else []
    return [dict(zip(names, row, strict=True)) for row in rows]


def _order(value: Any) -> tuple[int, str]:
    return (0, "") if value is None else (1, f"{value:020.6f}" if isinstance(value, int | float) else str(value))


def _fold(m: Metric, acc: Any, value: Any) -> Any:
    if value is None:
        return acc
    if acc is None:
        return value
    if m.fn in ("count", "sum"):
        return acc + value
    return min(acc, value) if m.fn == "min" else max(acc, value)


def merged_totals(p: Aggregate, parts: Sequence[PartitionResult]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """The mergeable metrics per group over every partition given."""
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    width = len(p.group_by)
    for part in parts:
        at = {c: i for i, c in enumerate(part.columns)}
        for row in part.rows:
            key = tuple(row[1:1 + width])
            acc = groups.setdefault(key, {})
            for m in p.metrics:
                if m.fn == "avg":
                    for hidden in (f"__sum_{m.out}", f"__n_{m.out}"):
                        acc[hidden] = (acc.get(hidden) or 0) + (row[at[hidden]] or 0)
                elif m.fn in MERGEABLE:
                    acc[m.out] = _fold(m, acc.get(m.out), row[at[m.out]])
    for acc in groups.values():
        for m in p.metrics:
            if m.fn == "avg":
                n = acc.pop(f"__n_{m.out}")
                total = acc.pop(f"__sum_{m.out}")
                acc[m.out] = total / n if n else None
    return groups


def spans(parts: Sequence[PartitionResult]) -> list[tuple[dt.datetime, dt.datetime]]:
    """The partitions' ranges, adjacent ones joined."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for part in sorted(parts, key=lambda x: x.start):
        if out and out[-1][1] == part.start:
            out[-1] = (out[-1][0], part.end)
        else:
            out.append((part.start, part.end))
    return out
