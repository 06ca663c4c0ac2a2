"""A job's progress extras as a view shows them: `name value` pairs, and a bar for each `name` with a `name_limit`
(a batch's cost against its cost limit, say), so spending is seen live against what may be spent."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

__all__ = ["ExtrasView", "format_extra"]

LIMIT = "_limit"


def format_extra(name: str, value: Any) -> str:
    """`value` as a person reads it: thousands separated, money in dollars, a few decimals."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if "cost" in name or "usd" in name:
        return f"${value:,.4f}" if abs(value) < 10 else f"${value:,.2f}"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"


class ExtrasView:
    """The extras line (`line`, HTML) and one labelled bar per limited extra (`meters`), updated in place."""

    def __init__(self) -> None:
        self.line = widgets.HTML()
        self.meters: dict[str, tuple[widgets.FloatProgress, widgets.Label]] = {}
        self.box = widgets.VBox([self.line])

    def render(self, extra: dict[str, Any]) -> None:
        limited = {k[: -len(LIMIT)] for k, v in extra.items() if k.endswith(LIMIT) and isinstance(v, int | float)
                   and not isinstance(v, bool) and v > 0 and isinstance(extra.get(k[: -len(LIMIT)]), int | float)}
        shown = [f"{html.escape(k.replace('_', ' '))} <b>{html.escape(format_extra(k, v))}</b>"
                 for k, v in extra.items() if v is not None and k not in limited and not
                 (k.endswith(LIMIT) and k[: -len(LIMIT)] in limited)]
        self.line.value = ("<span style='color:#374151;font-size:0.9em'>" + " · ".join(shown) + "</span>"
                           if shown else "")
        for name in sorted(limited):
            value, limit = float(extra[name]), float(extra[name + LIMIT])
            bar, label = self._meter(name)
            bar.max = limit
            bar.value = min(value, limit)
            bar.bar_style = "danger" if value >= limit else ("warning" if value >= 0.8 * limit else "success")
            label.value = (f"{name.replace('_', ' ')} {format_extra(name, value)} of {format_extra(name, limit)}"
                           f" ({100 * value / limit:.1f}%)")

    def _meter(self, name: str) -> tuple[widgets.FloatProgress, widgets.Label]:
        found = self.meters.get(name)
        if found is None:
            found = self.meters[name] = (widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="30%")),
                                         widgets.Label())
            self.box.children = (*self.box.children, widgets.HBox([found[1], found[0]]))
        return found
