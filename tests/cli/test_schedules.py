"""`jobkit schedules`: a SQLite file's schedules as a table with each one's next fire times, and as JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.cells import cell_len

import jobkit
from jobkit import schedules
from jobkit.models import Schedule

from .conftest import Ran

Cli = Callable[..., Ran]


async def _make(url: str) -> Schedule:
    backend = await jobkit.connect(url)
    try:
        q = jobkit.Queue("reports", backend=backend)
        nightly = await q.schedule("nightly-report", "report", {"kind": "sales"}, cron="0 3 * * *",
                                   tz="Europe/Berlin")
        await q.schedule("cleanup", "clean", every=3600, overlap="allow")
        await q.pause_schedule("cleanup")
        return nightly
    finally:
        await backend.close()


@pytest.fixture
def scheduled(tmp_path: Path) -> tuple[str, Schedule]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    return url, asyncio.run(_make(url))


@pytest.mark.parametrize("width", [80, 120])
def test_lists_schedules_with_their_next_five_fire_times(cli: Cli, scheduled: tuple[str, Schedule],
                                                         width: int) -> None:
    url, nightly = scheduled
    ran = cli("schedules", "reports", "--url", url, width=width)
    assert ran.code == 0 and all(cell_len(line) <= width for line in ran.out.splitlines()), ran.out
    assert "2 schedule(s)" in ran.out and "cleanup paused" in ran.out and "every 3600s" in ran.out
    expected = [schedules.when(nightly, at) for at in schedules.upcoming(nightly, 5)]
    assert all(t.endswith(("03:00 CET", "03:00 CEST")) for t in expected) and len(set(expected)) == 5
    assert all(t in ran.out for t in expected), ran.out
    assert ("skipped" in ran.out) == (width == 120), "fired and skipped only where they fit"


def test_json_has_the_next_fire_times_in_utc(cli: Cli, scheduled: tuple[str, Schedule]) -> None:
    url, nightly = scheduled
    ran = cli("schedules", "--url", url, "--json", "--next", "3")
    assert ran.code == 0, ran.err
    data = {s["id"]: s for s in json.loads(ran.out)}
    assert set(data) == {"cleanup", "nightly-report"} and data["cleanup"]["paused"] is True
    assert data["nightly-report"]["next"] == [schedules.tick_id("x", at).partition("@")[2]
                                              for at in schedules.upcoming(nightly, 3)]


def test_says_how_to_add_one_when_there_is_none(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    asyncio.run(_empty(url))
    ran = cli("schedules", "--url", url)
    assert ran.code == 0 and "no schedules in any queue; add one with Queue.schedule()" in ran.out


def test_a_missing_database_is_an_error_not_a_new_file(cli: Cli, tmp_path: Path) -> None:
    ran = cli("schedules", "--url", f"sqlite:///{tmp_path / 'none.db'}")
    assert ran.code == 2 and not (tmp_path / "none.db").exists()


async def _empty(url: str) -> None:
    await (await jobkit.connect(url)).close()
