"""A SQLite database with jobs in each interesting state, and the real `jobkit` CLI run in-process on it."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobkit.backends import from_url
from jobkit.cli import main
from jobkit.models import Job, JobOptions, JobState, Outcome, Progress

QUEUE = "cli"
LONG_ID = "7f3a" * 8  # as long as the ids jobkit makes


def real_traceback() -> str:
    def read_header(sheet: list[str]) -> str:
        if not sheet:
            raise ValueError("the sheet has no header row")
        return sheet[0]

    try:
        read_header([])
    except ValueError as exc:
        return "".join(traceback.format_exception(exc))
    raise AssertionError("unreachable")


async def populate(url: str) -> None:
    """ok-1 completed, bad-1 failed with a real traceback, slow-1 active at 40%, LONG_ID waiting."""
    b = from_url(url)
    await b.open()
    now = time.time() - 60  # a minute ago, so every time shown is in the past
    await b.add([Job(id="ok-1", name="cli.import", queue=QUEUE, data={"path": "a.xlsx"}),
                 Job(id="bad-1", name="cli.import", queue=QUEUE, data={"path": "b.xlsx"}, options=JobOptions()),
                 Job(id="slow-1", name="cli.report", queue=QUEUE, data={"days": 30})])
    await b.claim(QUEUE, "w1", limit=3, lease=300, now=now)
    await b.finish(QUEUE, "w1", [
        Outcome(job_id="ok-1", state=JobState.COMPLETED, result={"rows": 3}),
        Outcome(job_id="bad-1", state=JobState.FAILED, error="ValueError: the sheet has no header row",
                traceback=real_traceback()),
    ], now + 1.5)
    await b.set_progress(QUEUE, "w1", "slow-1", Progress(percent=40, message="day 12/30"))
    await b.add([Job(id=LONG_ID, name="cli.report", queue=QUEUE, data={"days": 7})])
    await b.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    asyncio.run(populate(url))
    return url


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Ran]]:
    """`cli(*argv, width=80)`: the `jobkit` command's exit code and output, its tables fitted to `width`."""
    for var in ("JOBKIT_URL", "REDIS_URL", "JOBKIT_LOG_LEVEL", "JOBKIT_LOG_ALL"):
        monkeypatch.delenv(var, raising=False)
    levels = {name: logging.getLogger(name).level for name in ("", "jobkit")}

    def run(*argv: str, width: int = 80) -> Ran:
        monkeypatch.setenv("COLUMNS", str(width))
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: --version, usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    yield run
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
