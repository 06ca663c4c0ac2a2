"""Hostile payloads: an Excel import names only what the worker registered, and touches only files in its roots.

Each refusal fails the job at once (no retries), says what is allowed, and leaves nothing imported, called,
created or overwritten.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]

import jobkit
import jobkit.jobs
from jobkit.backends import Backend

from . import excel_helpers as h
from .excel_helpers import customer_rows, write_book


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The worker's only file root; `tmp_path / "outside"` holds what a payload must not reach."""
    inside = tmp_path / "root"
    inside.mkdir()
    (tmp_path / "outside").mkdir()
    jobkit.jobs.configure(file_roots=[inside])
    return inside


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An importable module whose import (or call) leaves a marker file: proof that a payload ran code."""
    marker = tmp_path / "imported.marker"
    code = f"""
        from pathlib import Path
        Path({str(marker)!r}).write_text("imported")
        from pydantic import BaseModel
        class Model(BaseModel):
            id: int
        def boom(rows):
            Path({str(marker)!r}).write_text("called")
    """
    (tmp_path / "evil_payload_module.py").write_text(textwrap.dedent(code))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("evil_payload_module", None)


def payload(root: Path, **extra: Any) -> dict[str, Any]:
    return {"path": str(root / "customers.xlsx"), "sheet": "Data", "row_model": "Customer",
            "destination": f"sqlite:///{root / 'w.db'}?table=customers", **extra}


async def refused(backend: Backend, data: dict[str, Any]) -> str:
    """Run the import; it must fail on its first attempt with retries skipped. Returns the job's error."""
    with pytest.raises(jobkit.JobFailed) as info:
        await jobkit.run(jobkit.jobs.excel_import, data, backend=backend, timeout=30)
    job = info.value.job
    assert job.attempts == 1 and "retries skipped" in (job.error or ""), job.error
    return job.error or ""


# -- names: row models and python destinations ---------------------------------------------------------------------

async def test_row_model_import_paths_are_never_imported(memory: Backend, root: Path, evil_module: Path) -> None:
    write_book(root / "customers.xlsx", customer_rows(3))
    for ref in ("evil_payload_module:Model", "evil_payload_module.Model", "os:system"):
        error = await refused(memory, payload(root, row_model=ref))
        assert f"row model {ref!r} is not registered" in error and "registered: " in error and "Customer" in error
        assert "register_row_model" in error
    assert not evil_module.exists() and "evil_payload_module" not in sys.modules
    assert not (root / "w.db").exists()


async def test_python_destinations_are_never_imported_or_called(memory: Backend, root: Path, evil_module: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(("os.system", a)))
    monkeypatch.setattr(sys, "exit", lambda *a: calls.append(("sys.exit", a)))
    write_book(root / "customers.xlsx", customer_rows(3))
    for ref in ("os:system", "sys:exit", "evil_payload_module:boom"):
        error = await refused(memory, payload(root, destination=f"python:{ref}"))
        assert f"python destination {ref!r} is not registered" in error
        assert "register_python_destination" in error
    assert calls == [] and not evil_module.exists() and "evil_payload_module" not in sys.modules


async def test_registered_python_destination_by_name_and_by_import_path(memory: Backend, root: Path) -> None:
    write_book(root / "customers.xlsx", customer_rows(4))
    h.received.clear()
    for ref in ("collect", f"{h.__name__}:collect"):
        report = await jobkit.run(jobkit.jobs.excel_import, payload(root, destination=f"python:{ref}"),
                                  backend=memory, timeout=30)
        assert report.rows_imported == 4
    assert len(h.received) == 8
    report = await jobkit.run(jobkit.jobs.excel_import, payload(root, row_model=f"{h.__name__}:Customer"),
                              backend=memory, timeout=30)
    assert report.rows_imported == 4  # a registered model may also be named by its import path


async def test_unknown_destination_kind_lists_the_registered_ones(memory: Backend, root: Path) -> None:
    write_book(root / "customers.xlsx", customer_rows(1))
    error = await refused(memory, payload(root, destination="ftp://user:s3cret@host/x"))
    assert "unknown destination 'ftp://user:***@host/x'" in error and "'sqlite:...'" in error
    assert "s3cret" not in error


# -- paths: the workbook, the SQLite destination, the error file ---------------------------------------------------

@pytest.mark.parametrize("where", ["dotdot", "absolute", "etc_passwd", "file_link", "dir_link"])
async def test_workbook_outside_the_roots_is_refused(memory: Backend, root: Path, tmp_path: Path, where: str) -> None:
    outside = write_book(tmp_path / "outside" / "customers.xlsx", customer_rows(3))
    (root / "link.xlsx").symlink_to(outside)
    (root / "shared").symlink_to(outside.parent)
    path = {"dotdot": "../outside/customers.xlsx", "absolute": str(outside), "etc_passwd": "../" * 30 + "etc/passwd",
            "file_link": "link.xlsx", "dir_link": "shared/customers.xlsx"}[where]
    error = await refused(memory, payload(root, path=path))
    assert "outside the file roots" in error and str(root.resolve()) in error
    assert not (root / "w.db").exists()


@pytest.mark.parametrize("where", ["dotdot", "absolute", "dir_link"])
async def test_sqlite_destination_outside_the_roots_is_refused(memory: Backend, root: Path, tmp_path: Path,
                                                               where: str) -> None:
    write_book(root / "customers.xlsx", customer_rows(3))
    (root / "shared").symlink_to(tmp_path / "outside")
    db = {"dotdot": "../outside/w.db", "absolute": str(tmp_path / "outside" / "w.db"), "dir_link": "shared/w.db"}[where]
    error = await refused(memory, payload(root, destination=f"sqlite:///{db}?table=customers"))
    assert "outside the file roots" in error
    assert list((tmp_path / "outside").iterdir()) == []


async def test_relative_paths_are_taken_in_the_first_root(memory: Backend, root: Path) -> None:
    write_book(root / "customers.xlsx", customer_rows(5))
    report = await jobkit.run(jobkit.jobs.excel_import, {
        "path": "customers.xlsx", "row_model": "Customer", "destination": "sqlite:///w.db?table=customers"},
        backend=memory, timeout=30)
    assert report.rows_imported == 5 and len(h.table(root / "w.db")) == 5


async def test_error_file_never_replaces_an_existing_file(memory: Backend, root: Path) -> None:
    rows = customer_rows(5)
    rows[1][2] = "bad email"
    write_book(root / "customers.xlsx", rows)
    precious = root / "precious.xlsx"
    precious.write_bytes(b"someone else's workbook")
    error = await refused(memory, payload(root, error_file=str(precious)))
    assert "already exists" in error and "never replaces" in error
    assert precious.read_bytes() == b"someone else's workbook"
    assert not (root / "w.db").exists(), "refused before any row was imported"


async def test_error_file_outside_the_roots_or_not_xlsx_is_refused(memory: Backend, root: Path, tmp_path: Path) -> None:
    rows = customer_rows(5)
    rows[1][2] = "bad email"
    write_book(root / "customers.xlsx", rows)
    (root / "dangling.xlsx").symlink_to(tmp_path / "outside" / "planted.xlsx")
    for target, why in [(str(tmp_path / "outside" / "e.xlsx"), "outside the file roots"),
                        ("../outside/e.xlsx", "outside the file roots"),
                        ("dangling.xlsx", "outside the file roots"),
                        ("notes.txt", "must end in .xlsx")]:
        error = await refused(memory, payload(root, error_file=target))
        assert why in error, error
    assert list((tmp_path / "outside").iterdir()) == [] and not (root / "notes.txt").exists()


async def test_default_error_file_picks_a_new_name_beside_an_existing_one(memory: Backend, root: Path) -> None:
    rows = customer_rows(5)
    rows[1][2] = "bad email"
    write_book(root / "customers.xlsx", rows)
    earlier = root / "customers.errors.xlsx"
    earlier.write_bytes(b"the report of an earlier import")
    report = await jobkit.run(jobkit.jobs.excel_import, payload(root, error_file=True), backend=memory, timeout=30)
    assert report.rows_rejected == 1
    assert report.error_file == str(root.resolve() / "customers.errors-2.xlsx")
    assert earlier.read_bytes() == b"the report of an earlier import"
    assert [r[0] for r in load_workbook(report.error_file, read_only=True).active.iter_rows(values_only=True)] == [
        "Row", 3]


async def test_a_retry_rewrites_the_error_file_its_job_created(memory: Backend, root: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The error file is written, then the attempt dies: the retry replaces that file, its own, in place."""
    rows = customer_rows(5)
    rows[1][2] = "bad email"
    write_book(root / "customers.xlsx", rows)
    real = jobkit.Context.progress
    failed_once = False

    async def flaky(self: jobkit.Context, percent: float, message: str = "", **extra: Any) -> None:
        nonlocal failed_once
        if percent == 100 and not failed_once:
            failed_once = True
            raise ConnectionError("the backend went away after the error file was written")
        await real(self, percent, message, **extra)

    monkeypatch.setattr(jobkit.Context, "progress", flaky)
    handle = await jobkit.submit(jobkit.jobs.excel_import, payload(root, error_file=True), backend=memory,
                                 backoff=jobkit.Backoff.fixed(0))
    report = await handle.result(timeout=30)
    assert failed_once and report.attempts == 2
    assert report.error_file == str(root.resolve() / "customers.errors.xlsx")
    assert sorted(p.name for p in root.iterdir()) == ["customers.errors.xlsx", "customers.xlsx", "w.db"]
