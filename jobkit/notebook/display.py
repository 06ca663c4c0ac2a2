"""How jobkit objects show themselves: live widgets in a Jupyter kernel, text everywhere else.

Widgets need a kernel (comms) and its running loop to feed them. Their mime bundle always carries a
text/plain rendering too, so a frontend without the widget manager (nbconvert, a headless run without
widget state, a plain console) shows a progress line, never a widget's repr.
"""

from __future__ import annotations

import asyncio
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

__all__ = ["dashboard", "handle_mimebundle", "progress_group", "recent_views", "use_widgets"]

_recent: deque[Any] = deque(maxlen=100)  # views shown lately, for inspection from the kernel (tests, debugging)


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


def handle_mimebundle(handle: JobHandle[Any], include: Any = None, exclude: Any = None) -> dict[str, Any]:
    """`JobHandle._repr_mimebundle_`: a live JobView in a kernel, else the job as one text line."""
    if not use_widgets():
        return {"text/plain": render_text(handle.last)}
    from .job_view import JobView

    view = JobView(handle).start()
    _recent.append(view)
    return view._repr_mimebundle_(include=include, exclude=exclude)


def progress_group(handles: Sequence[JobHandle[Any]]) -> GroupView:
    """One view of many jobs: an overall bar and a line per job; live once displayed in a notebook.

    Outside a kernel, `await progress_group(handles).wait()` follows the jobs; `watch_text` prints them.
    """
    from .group_view import GroupView

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
