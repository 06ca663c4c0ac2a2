"""GroupView: an overall bar over many jobs, a line each, a table past MAX_LINES."""

from __future__ import annotations

from typing import Any

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState
from jobkit.notebook import progress_group
from jobkit.notebook.group_view import GroupView

from .conftest import broken, steps


async def test_lines_and_overall_bar_follow_every_job(memory: Backend) -> None:
    handles: list[jobkit.JobHandle[Any]] = [await jobkit.submit(steps, n, backend=memory) for n in (100, 300, 500)]
    handles.append(await jobkit.submit(broken, backend=memory))
    view = progress_group(handles)  # not in a kernel: nothing runs until asked
    assert view._bg is None and not view.collapsed
    jobs = await view.wait(timeout=20)
    assert [j.state for j in jobs] == [JobState.COMPLETED] * 3 + [JobState.FAILED]
    assert view.bar.value == 100.0 and view.bar.bar_style == "danger"
    assert "4 of 4 jobs finished" in view.summary.value
    lines = [view.lines[(h.queue, h.id)] for h in handles]
    assert [line.bar.value for line in lines[:3]] == [100.0] * 3
    assert lines[3].message.value == "ValueError: the spreadsheet has no header row"
    assert view._repr_mimebundle_()["text/plain"].count("\n") == 3


async def test_past_max_lines_the_view_collapses_into_a_table(memory: Backend) -> None:
    handles = [await jobkit.submit(steps, 10, backend=memory) for _ in range(40)]
    view = GroupView(handles, max_lines=30)
    assert view.collapsed and not view.lines
    await view.wait(timeout=20)
    assert view.table.value.count("<tr>") == 30 and "… and 10 more" in view.table.value
    assert "40 of 40 jobs finished" in view.summary.value and view.bar.bar_style == "success"
    assert len(view.widget.children) == 3  # summary, bar, table: not 40 widget lines


async def test_one_subscription_per_queue_and_few_renders(memory: Backend) -> None:
    handles = [await jobkit.submit(steps, 2000, backend=memory) for _ in range(10)]
    view = GroupView(handles).start()
    await view.wait(timeout=30)
    assert len(view.feed._groups) == 1
    assert view.renders < 40, view.renders


@jobkit.task(name="nb.total")
async def total(ctx: jobkit.Context) -> int:
    return sum(c.result for c in await ctx.children())


async def test_a_flow_parent_shows_itself_and_its_children(memory: Backend) -> None:
    h = await jobkit.flow(total, None, children=[(steps, n) for n in (100, 200, 300)], backend=memory)
    view = progress_group(h)
    assert view.keys == [(h.queue, h.id), *((c.queue, c.id) for c in h.child_handles or [])]
    assert len(view.lines) == 4
    jobs = await view.wait(timeout=20)
    assert [j.state for j in jobs] == [JobState.COMPLETED] * 4 and jobs[0].result == 600
    assert "4 of 4 jobs finished" in view.summary.value and view.bar.value == 100.0


async def test_a_parent_read_back_loads_its_children_when_it_starts(memory: Backend) -> None:
    h = await jobkit.flow(total, None, children=[(steps, n) for n in (100, 200)], backend=memory)
    again = await jobkit.Queue(h.queue, backend=memory).handle(h.id)
    assert again.child_handles is None
    view = progress_group(again)
    assert view.keys == [(h.queue, h.id)]
    jobs = await view.wait(timeout=20)
    assert len(view.keys) == 3 and len(view.lines) == 3
    assert [j.state for j in jobs] == [JobState.COMPLETED] * 3
