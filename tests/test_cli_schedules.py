"""`jobkit schedules`: a real `jobkit` process lists a SQLite file's schedules with their next fire times."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jobkit
from jobkit import schedules

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobkit", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


async def test_lists_schedules_with_their_next_five_fire_times(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    backend = await jobkit.connect(url)
    try:
        q = jobkit.Queue("reports", backend=backend)
        nightly = await q.schedule("nightly-report", "report", {"kind": "sales"}, cron="0 3 * * *",
                                   tz="Europe/Berlin")
        await q.schedule("cleanup", "clean", every=3600, overlap="allow")
        await q.pause_schedule("cleanup")
    finally:
        await backend.close()
    done = _cli("schedules", "reports", "--url", url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("reports cleanup PAUSED: task=clean every=3600s overlap=allow"), lines
    assert lines[1].startswith("  next if resumed: ")
    assert lines[2].startswith("reports nightly-report: task=report cron='0 3 * * *' tz=Europe/Berlin"), lines
    expected = [schedules.when(nightly, at) for at in schedules.upcoming(nightly, 5)]
    assert lines[3] == "  next: " + ", ".join(expected)
    assert all(t.endswith(("03:00 CET", "03:00 CEST")) for t in expected) and len(set(expected)) == 5


async def test_says_how_to_add_one_when_there_is_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    done = _cli("schedules", "--url", url)
    assert done.returncode == 0, done.stderr
    assert "no schedules in any queue; add one with Queue.schedule()" in done.stdout
