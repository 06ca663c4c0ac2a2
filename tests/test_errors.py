"""Bad input gets an error that names the problem and the fix; nothing is half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import jobkit
from jobkit.backends import from_url


@pytest.mark.parametrize("url", ["", "localhost:6379", "sqlite:/jobs.db", "nope"])
def test_malformed_url(url: str) -> None:
    with pytest.raises(jobkit.ConfigError, match="malformed backend URL"):
        from_url(url)


def test_unknown_scheme() -> None:
    with pytest.raises(jobkit.ConfigError, match=r"unknown backend URL scheme 'postgres'.*memory://"):
        from_url("postgres://localhost/db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the read-only case is covered below")
async def test_unwritable_sqlite_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(jobkit.ConfigError, match="SQLite"):
        await jobkit.connect(f"sqlite:///{locked / 'sub' / 'jobs.db'}")


async def test_sqlite_path_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(jobkit.ConfigError, match="not-a-dir"):
        await jobkit.connect(f"sqlite:///{blocker / 'jobs.db'}")


async def test_sqlite_path_that_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(jobkit.ConfigError, match="SQLite"):
        await jobkit.connect(f"sqlite:///{tmp_path}")


def test_task_must_be_async() -> None:
    with pytest.raises(jobkit.ConfigError, match="async def"):

        @jobkit.task
        def not_async(ctx: jobkit.Context) -> None:  # type: ignore[type-var]
            pass


def test_task_name_taken_by_another_function_is_refused(tmp_path: Path) -> None:
    """Jobs carry only the task's name: two functions under one name would silently run each other's jobs."""
    import importlib.util

    def load(module: str) -> object:
        path = tmp_path / f"{module}.py"
        path.write_text("import jobkit\n\n@jobkit.task\nasync def send_report(ctx, to: str) -> str:\n    return to\n")
        spec = importlib.util.spec_from_file_location(module, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    first = load("billing_tasks")
    assert load("billing_tasks") is not first, "the same function defined again (a re-run cell) replaces itself"
    with pytest.raises(jobkit.ConfigError, match=r"'send_report' is already taken by billing_tasks\.send_report;"
                       r" crm_tasks\.send_report needs a name of its own: @jobkit\.task\(name='crm_tasks\."):
        load("crm_tasks")
    assert jobkit.task(name="crm.send_report")(first.send_report.fn).name == "crm.send_report"  # type: ignore[attr-defined]


def test_task_signature_checked() -> None:
    with pytest.raises(jobkit.ConfigError, match=r"\(ctx\) or \(ctx, payload\)"):

        @jobkit.task
        async def too_many(ctx: jobkit.Context, a: int, b: int) -> None:
            pass


def test_task_options_out_of_range() -> None:
    with pytest.raises(jobkit.ConfigError, match="attempts"):
        jobkit.task(attempts=0)
    with pytest.raises(jobkit.ConfigError, match="timeout"):
        jobkit.task(timeout=-1)


def test_worker_options_out_of_range() -> None:
    with pytest.raises(jobkit.ConfigError, match="concurrency"):
        jobkit.Worker([], concurrency=0)


def test_queue_name_checked() -> None:
    with pytest.raises(jobkit.ConfigError, match="queue name"):
        jobkit.Queue("")
    with pytest.raises(jobkit.ConfigError, match="braces"):
        jobkit.Queue("a{b}")


async def test_unknown_task_name_in_submit() -> None:
    with pytest.raises(jobkit.TaskNotFound, match="no task named 'missing.task'"):
        await jobkit.submit("missing.task", {}, backend="memory://")


def test_public_api_is_exactly_reexported() -> None:
    import types

    public = {n for n in dir(jobkit) if not n.startswith("_") and not isinstance(getattr(jobkit, n), types.ModuleType)}
    assert public == set(jobkit.__all__) - {"__version__"}, "re-export every public name, and nothing else"
    assert jobkit.__all__ == sorted(jobkit.__all__)
