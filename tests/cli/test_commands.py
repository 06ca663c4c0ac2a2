"""The `jobkit` command's admin side: clear answers to bad input, --version, --log-level anywhere, and admin
commands that never create a database."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

import jobkit
from jobkit.backends import from_url
from jobkit.models import JobState

from .conftest import QUEUE, Ran

Cli = Callable[..., Ran]


def test_version_prints_jobkits_version(cli: Cli) -> None:
    ran = cli("--version")
    assert ran.code == 0 and ran.out.strip() == f"jobkit {jobkit.__version__}"


def test_a_bogus_state_is_a_usage_error_that_lists_the_valid_states(cli: Cli, db: str) -> None:
    ran = cli("jobs", "list", QUEUE, "--state", "bogus", "--url", db)
    assert ran.code == 2 and "Traceback" not in ran.err
    assert "invalid choice: 'bogus'" in ran.err
    assert all(f"'{s.value}'" in ran.err for s in JobState), ran.err


@pytest.mark.parametrize("argv", [["--log-level", "debug", "status"], ["status", "--log-level", "DEBUG"],
                                  ["jobs", "list", QUEUE, "--log-level", "ERROR"]])
def test_log_level_goes_before_or_after_the_subcommand(cli: Cli, db: str, argv: list[str]) -> None:
    ran = cli(*argv, "--url", db)
    assert ran.code == 0, ran.err
    assert logging.getLogger("jobkit").level == logging.getLevelName(argv[argv.index("--log-level") + 1].upper())


def test_a_bogus_log_level_lists_the_levels(cli: Cli, db: str) -> None:
    ran = cli("status", "--url", db, "--log-level", "LOUD")
    assert ran.code == 2 and "DEBUG" in ran.err and "Traceback" not in ran.err


def test_retry_of_a_missing_job_says_no_job_and_fails(cli: Cli, db: str) -> None:
    ran = cli("jobs", "retry", QUEUE, "missing-id", "--url", db)
    assert ran.code == 1 and "no job 'missing-id' in queue 'cli'" in ran.err and "retried" not in ran.out


def test_retry_of_a_job_that_did_not_fail_says_so(cli: Cli, db: str) -> None:
    ran = cli("jobs", "retry", QUEUE, "ok-1", "--url", db)
    assert ran.code == 1 and "'ok-1' in queue 'cli' is completed: only failed or cancelled jobs" in ran.err


def test_retry_of_a_failed_job_sends_it_back(cli: Cli, db: str) -> None:
    ran = cli("jobs", "retry", QUEUE, "bad-1", "--url", db)
    assert ran.code == 0 and ran.out.strip() == "retried 1 job"

    async def state() -> JobState | None:
        b = from_url(db)
        try:
            job = await b.get(QUEUE, "bad-1")
            return job.state if job else None
        finally:
            await b.close()

    assert asyncio.run(state()) is JobState.WAITING


def test_cancel_and_show_of_a_missing_job_say_no_job(cli: Cli, db: str) -> None:
    for action in ("cancel", "show"):
        ran = cli("jobs", action, QUEUE, "missing-id", "--url", db)
        assert ran.code == 1 and "no job 'missing-id' in queue 'cli'" in ran.err, (action, ran)


@pytest.mark.parametrize("argv", [["status"], ["jobs", "list", "q"], ["jobs", "show", "q", "j1"],
                                  ["jobs", "retry", "q"], ["jobs", "clean", "q"]])
def test_admin_commands_on_a_missing_database_create_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in (f"sqlite:///{tmp_path}/nonexistent/dir/x.db", "sqlite:///x.db", None):
        ran = cli(*argv, *(["--url", url] if url else []))
        assert ran.code == 2 and "no SQLite database at" in ran.err and "Traceback" not in ran.err, (url, ran)
    assert list(tmp_path.iterdir()) == []  # neither nonexistent/, x.db nor .jobkit/jobs.db


def test_jobs_list_by_owner_and_tag(cli: Cli, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'owned.db'}"

    async def fill() -> None:
        q = jobkit.Queue(QUEUE, backend=url)
        await q.add("t", 1, job_id="a-1", owner="alice", tags={"doc": "d-1"})
        await q.add("t", 2, job_id="a-2", owner="alice", tags={"doc": "d-2"})
        await q.add("t", 3, job_id="b-1", owner="bob", tags={"doc": "d-1"})
        await (await q.backend()).close()

    asyncio.run(fill())
    listed = cli("jobs", "list", QUEUE, "--owner", "alice", "--json", "--url", url)
    assert listed.code == 0, listed.err
    assert [j["id"] for j in json.loads(listed.out)] == ["a-2", "a-1"]
    tagged = cli("jobs", "list", QUEUE, "--tag", "doc=d-1", "--json", "--url", url)
    assert [j["id"] for j in json.loads(tagged.out)] == ["b-1", "a-1"]
    bad = cli("jobs", "list", QUEUE, "--tag", "doc", "--url", url)
    assert bad.code == 2 and "key=value" in bad.err and "Traceback" not in bad.err
