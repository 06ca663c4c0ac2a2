"""Dashboard: counts and recent jobs of every queue, and buttons that act on the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import jobkit
from jobkit import schedules
from jobkit.backends import Backend
from jobkit.models import JobState
from jobkit.notebook.dashboard_view import Dashboard

from .conftest import broken, steps


@pytest.fixture
async def filled(memory: Backend) -> Backend:
    """Queue nb: two completed jobs and a failed one; queue other: three waiting jobs."""
    handles: list[jobkit.JobHandle[Any]] = [
        await jobkit.submit(steps, 10, backend=memory), await jobkit.submit(steps, 20, backend=memory),
        await jobkit.submit(broken, backend=memory)]
    for h in handles:
        await h.wait(timeout=10)
    await jobkit.Queue("other", backend=memory).add_bulk("elsewhere.task", [1, 2, 3])
    return memory


async def clicked(dash: Dashboard, button: object) -> None:
    button.click()  # type: ignore[attr-defined]
    assert dash._actions is not None
    await dash._actions.join(timeout=10)


async def test_refresh_shows_counts_and_recent_jobs(filled: Backend) -> None:
    dash = Dashboard(filled, limit=5)
    await dash.refresh()
    assert set(dash.counts) == {"nb", "other"}
    assert (dash.counts["nb"].completed, dash.counts["nb"].failed, dash.counts["other"].waiting) == (2, 1, 3)
    assert len(dash.recent) == 5 and dash.recent[0].queue == "other"
    table = dash.table.value
    assert table.count("<tr>") == 6 and "ValueError: the spreadsheet has no header row" in table
    assert "nb: completed 2, failed 1; " in dash.text()
    # The last 30 minutes: a sparkline of jobs finished per minute (all three in this one), rate, success, p95 run.
    activity = dash.text().split("nb: completed 2, failed 1; ")[1].splitlines()[0]
    spark, rest = activity[:30], activity[30:]
    # All three finished this minute (or, across a minute's turn, the one before): the last bars, the tallest full.
    assert spark[:28].strip() == "" and "█" in spark[28:], activity
    assert rest.startswith(" 0.1/min, 67% ok, p95 run "), activity
    assert "<span style='color:#6b7280;font-family:monospace'>" in dash._rows["nb"].label.value
    assert "other: waiting 3; no job finished in 30 min" in dash.text()
    row = dash._rows["nb"]
    assert not row.retry.disabled and not row.clean.disabled
    assert dash._rows["other"].retry.disabled


async def test_buttons_pause_resume_retry_and_clean(filled: Backend) -> None:
    dash = Dashboard(filled, queues=["nb"])
    await dash.refresh()
    row = dash._rows["nb"]

    await clicked(dash, row.pause)
    assert (await filled.counts("nb")).paused and row.pause.description == "Resume"
    await clicked(dash, row.pause)
    assert not (await filled.counts("nb")).paused and row.pause.description == "Pause"

    await clicked(dash, row.clean)
    assert (await filled.counts("nb")).completed == 0 and dash.status == "removed 2 completed job(s) of nb"

    await filled.set_paused("nb", True)  # keep the retried job waiting so the count is stable
    await clicked(dash, row.retry)
    counts = await filled.counts("nb")
    assert (counts.failed, counts.waiting) == (0, 1) and row.retry.disabled
    assert [j.state for j in await filled.list("nb")] == [JobState.WAITING]


async def test_live_dashboard_refreshes_on_events(filled: Backend) -> None:
    dash = Dashboard(filled, interval=0.05, period=60).start()
    try:
        async def seen(n: int) -> None:
            while dash.counts.get("other") is None or dash.counts["other"].waiting != n:
                dash.refreshed.clear()
                await dash.refreshed.wait()

        await asyncio.wait_for(seen(3), 10)
        before = dash.refreshes
        await jobkit.Queue("other", backend=filled).add("elsewhere.task", 4)  # an event, long before the period
        await asyncio.wait_for(seen(4), 10)
        assert dash.refreshes - before <= 2
    finally:
        dash.close()


async def test_schedules_show_with_their_next_five_fire_times(filled: Backend) -> None:
    q = jobkit.Queue("nb", backend=filled)
    nightly = await q.schedule("nightly-report", "steps", 5, cron="30 2 * * *", tz="Europe/Berlin")
    await q.schedule("often", "steps", 1, every=60)
    await q.pause_schedule("often")
    dash = Dashboard(filled)
    await dash.refresh()
    assert [s.id for s in dash.schedules] == ["nightly-report", "often"]
    table = dash.schedule_table.value
    assert table.count("<tr>") == 3 and "<code>30 2 * * *</code> Europe/Berlin" in table and "paused" in table
    expected = [schedules.when(nightly, at) for at in schedules.upcoming(nightly, 5)]
    assert "<br>".join(expected) in table and len(set(expected)) == 5
    assert f"schedule nightly-report (nb): next {', '.join(expected)}" in dash.text()
    assert "schedule often (nb) (paused): next " in dash.text()
