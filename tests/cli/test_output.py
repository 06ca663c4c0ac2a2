"""What `jobkit status` and `jobkit jobs` print: rich tables that fit 80 and 120 columns, a readable job card,
and the models' JSON with --json."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from rich.cells import cell_len

from jobkit.models import Job, JobState

from .conftest import LONG_ID, QUEUE, Ran, real_traceback

Cli = Callable[..., Ran]
ESC = "\x1b"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+(\.\d)?s|\d+m\d\ds) ago\)"


def fits(out: str, width: int) -> bool:
    return all(cell_len(line) <= width for line in out.splitlines())


@pytest.mark.parametrize("width", [80, 120])
def test_status_is_a_table_of_queues_that_fits(cli: Cli, db: str, width: int) -> None:
    ran = cli("status", "--url", db, width=width)
    assert ran.code == 0 and fits(ran.out, width) and ESC not in ran.out, ran.out
    lines = ran.out.splitlines()
    assert re.sub(r"\s", "", ran.out).startswith(f"backend{db}") and "no worker alive" in lines
    header = next(line for line in lines if line.startswith("queue "))
    assert header.split() == ["queue", "waiting", "delayed", "active", "completed", "failed", "cancelled", "paused"]
    row = next(line for line in lines if line.startswith(QUEUE + " "))
    assert row.split() == [QUEUE, "1", "0", "1", "1", "1", "0"]
    # The last 15 minutes: one completed and one failed, which ran 1.5 s (their claim predates their add).
    header = next(line for line in lines if line.startswith("queue ") and "rate/min" in line)
    assert header.split() == ["queue", "rate/min", "success", "p95", "wait", "p95", "run"]
    rows = [line.split() for line in lines if line.startswith(QUEUE + " ")]
    assert rows[1] == [QUEUE, f"{2 / 15:.1f}", "50%", "<1ms", "1.6s"]


def test_status_json_is_for_machines(cli: Cli, db: str) -> None:
    data = json.loads(cli("status", "--url", db, "--json").out)
    assert data["backend"] == db and data["workers"] == []
    assert data["queues"][QUEUE] == {"waiting": 1, "delayed": 0, "active": 1, "completed": 1, "failed": 1,
                                     "cancelled": 0, "waiting-children": 0, "paused": False}
    metrics = data["metrics"][QUEUE]
    assert (metrics["completed_total"], metrics["failed_total"], metrics["success_rate"]) == (1, 1, 0.5)
    assert len(metrics["completed"]) == 16 and metrics["run"]["count"] == 2


@pytest.mark.parametrize("width", [80, 120])
def test_jobs_list_is_a_table_with_whole_ids_that_fits(cli: Cli, db: str, width: int) -> None:
    ran = cli("jobs", "list", QUEUE, "--url", db, width=width)
    assert ran.code == 0 and fits(ran.out, width) and ESC not in ran.out, ran.out
    rows = {line.split()[0]: line for line in ran.out.splitlines() if line.split() and line.split()[0] in
            ("ok-1", "bad-1", "slow-1", LONG_ID)}
    assert set(rows) == {"ok-1", "bad-1", "slow-1", LONG_ID}, ran.out  # a whole id, to pass to `jobs show`
    assert " completed " in rows["ok-1"] and " active 40% " in rows["slow-1"] and " waiting " in rows[LONG_ID]
    assert " failed " in rows["bad-1"] and " 1/1 " in rows["bad-1"]
    if width >= 120:
        assert rows["bad-1"].rstrip().endswith("ValueError: the sheet has no header row")


def test_jobs_list_filters_by_state_and_prints_json(cli: Cli, db: str) -> None:
    ran = cli("jobs", "list", QUEUE, "--url", db, "--state", "failed", "--json")
    jobs = [Job.model_validate(j) for j in json.loads(ran.out)]
    assert [(j.id, j.state) for j in jobs] == [("bad-1", JobState.FAILED)]


@pytest.mark.parametrize("width", [80, 120])
def test_jobs_show_is_readable(cli: Cli, db: str, width: int) -> None:
    ran = cli("jobs", "show", QUEUE, "bad-1", "--url", db, width=width)
    assert ran.code == 0 and fits(ran.out, width) and ESC not in ran.out, ran.out
    fields = {m[1]: m[2].strip() for m in re.finditer(r"^(\w[\w ]*?)  +(.*)$", ran.out, re.M)}
    assert fields["state"] == "failed" and fields["attempts"] == "1 of 1" and fields["task"] == "cli.import"
    for name in ("created", "started", "finished"):
        assert re.fullmatch(STAMP, fields[name]), (name, fields[name])
    assert fields["error"] == "ValueError: the sheet has no header row"
    assert '"path": "b.xlsx"' in ran.out  # the payload, as JSON
    tb = ran.out[ran.out.index("\ntraceback\n"):]
    assert "Traceback (most recent call last):" in tb and "in read_header" in tb
    assert 'raise ValueError("the sheet has no header row")' in tb
    assert "history" in ran.out and "added" in ran.out
    assert not re.search(r"\b1[78]\d{8}\.\d+", ran.out)  # no raw epoch seconds


def test_jobs_show_json_is_the_models_json(cli: Cli, db: str) -> None:
    job = Job.model_validate_json(cli("jobs", "show", QUEUE, "bad-1", "--url", db, "--json").out)
    assert job.id == "bad-1" and job.state is JobState.FAILED and job.traceback == real_traceback_text(job)
    assert job.data == {"path": "b.xlsx"}


def real_traceback_text(job: Job) -> str:
    """The stored traceback ends as the one `real_traceback` makes (line numbers aside)."""
    ours = real_traceback()
    assert job.traceback is not None and job.traceback.splitlines()[-1] == ours.splitlines()[-1]
    return job.traceback
