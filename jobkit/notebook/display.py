"""How jobkit objects show themselves: live widgets in a Jupyter kernel, text everywhere else.

Widgets need a kernel (comms) and its running loop to feed them. Their mime bundle always carries a
text/plain rendering too, so a frontend without the widget manager (nbconvert, a headless run without
widget state, a plain console) shows a progress line, never a widget's repr. A live view is displayed with a
display id, and at the end of every cell its text/plain is brought up to date, so a saved notebook read
without widgets (GitHub, nbviewer) shows how the jobs ended, not how they started.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..config import BackendLike
from ..handle import JobHandle
from .text import render_text

if TYPE_CHECKING:
    from .dashboard_view import Dashboard
    from .group_view import GroupView

__all__ = ["dashboard", "display_handle", "display_view", "handle_mimebundle", "progress_group", "recent_views",
           "use_widgets"]

log = logging.getLogger("jobkit.notebook")
_recent: deque[Any] = deque(maxlen=100)  # views shown lately, for inspection from the kernel (tests, debugging)
_shown: deque[_Shown] = deque(maxlen=100)  # live views displayed with a display id, whose text may need updating
_hooked: set[int] = set()  # ids of the IPython shells whose post_run_cell calls `refresh_displays`


class _Shown:
    """A live view on the page: the display to update, and the text/plain it was last shown with."""

    def __init__(self, view: Any, display: Any, text: str) -> None:
        self.view, self.display, self.text = view, display, text


def use_widgets() -> bool:
    """True inside an IPython kernel (which has comms to a frontend) with a running event loop."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if getattr(shell, "kernel", None) is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def recent_views() -> list[Any]:
    """The views (JobView, GroupView, Dashboard) displayed lately in this process, oldest first."""
    return list(_recent)


def _publish(bundle: dict[str, Any], live: bool) -> Any:
    """Send `bundle` to the frontend as it is; with `live`, under a new display id, whose handle is returned."""
    from IPython.display import display

    return display(bundle, raw=True, display_id=live)  # type: ignore[no-untyped-call]


def display_view(view: Any) -> None:
    """`_ipython_display_` of the live views: their bundle under a display id that `refresh_displays` updates."""
    bundle = view._repr_mimebundle_()
    if not use_widgets():
        _publish({"text/plain": bundle["text/plain"]}, live=False)
        return
    _shown.append(_Shown(view, _publish(bundle, live=True), bundle["text/plain"]))
    shell = sys.modules["IPython"].get_ipython()
    if id(shell) not in _hooked:
        _hooked.add(id(shell))
        shell.events.register("post_run_cell", refresh_displays)


def display_handle(handle: JobHandle[Any]) -> None:
    """`JobHandle._ipython_display_`: a live JobView in a kernel, else the job as one text line."""
    if not use_widgets():
        _publish({"text/plain": render_text(handle.last)}, live=False)
        return
    from .job_view import JobView

    view = JobView(handle).start()
    _recent.append(view)
    display_view(view)


def refresh_displays(*_result: Any) -> None:
    """Bring the text/plain of displayed views up to date; views whose jobs have all ended are then let go.

    Runs at the end of every cell, so the update belongs to the cell that just ran: nbclient and frontends
    apply it to the earlier cell's output by its display id.
    """
    for shown in list(_shown):
        try:
            bundle = shown.view._repr_mimebundle_()
            if bundle["text/plain"] != shown.text:
                shown.display.update(bundle, raw=True)
                shown.text = bundle["text/plain"]
        except Exception:  # a stale saved text is no reason to print a traceback under a cell
            log.debug("could not update the text of %r", shown.view, exc_info=True)
        if getattr(shown.view, "ended", False):
            _shown.remove(shown)


def handle_mimebundle(handle: JobHandle[Any], include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """`JobHandle._repr_mimebundle_`: a live JobView in a kernel, else the job as one text line."""
    if not use_widgets():
        return {"text/plain": render_text(handle.last)}
    from .job_view import JobView

    view = JobView(handle).start()
    _recent.append(view)
    return view._repr_mimebundle_(include=include, exclude=exclude)


def progress_group(handles: Sequence[JobHandle[Any]] | JobHandle[Any]) -> GroupView:
    """One view of many jobs: an overall bar and a line per job; live once displayed in a notebook. Given a flow's
    parent (the handle `jobkit.flow` returns), the parent and its children.

    Outside a kernel, `await progress_group(handles).wait()` follows the jobs; `watch_text` prints them.
    """
    from .group_view import GroupView

    if isinstance(handles, JobHandle):
        kids = handles.child_handles
        view = GroupView([handles, *kids]) if kids is not None else GroupView([handles], children_of=handles)
    else:
        view = GroupView(handles)
    if use_widgets():
        view.start()
        _recent.append(view)
    return view


def dashboard(backend: BackendLike = None, queues: Sequence[str] | None = None) -> Dashboard:
    """Every queue of `backend` (default: the process's), live: counts, recent jobs, pause/resume/retry/clean."""
    from .dashboard_view import Dashboard

    view = Dashboard(backend, queues)
    if use_widgets():
        view.start()
        _recent.append(view)
    return view
