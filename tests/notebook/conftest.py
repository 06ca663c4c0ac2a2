"""Helpers for the notebook view tests (the `memory` backend fixture is in tests/conftest.py)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import jobkit


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (bounded) until `pred()` holds, checking on every turn of the loop."""

    async def check() -> None:
        while not pred():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(check(), timeout)


@jobkit.task(name="nb.steps", queue="nb")
async def steps(ctx: jobkit.Context, n: int) -> int:
    """Reports progress `n` times, yielding to the loop now and then."""
    for i in range(1, n + 1):
        await ctx.progress(100 * i / n, f"step {i}/{n}", step=i)
        if i % 50 == 0:
            await asyncio.sleep(0.001)
    return n


@jobkit.task(name="nb.hold", queue="nb")
async def hold(ctx: jobkit.Context) -> str:
    """Runs until cancelled."""
    await ctx.progress(5, "holding")
    await asyncio.wait_for(ctx.wait_cancelled(), 30)
    return "released"


@jobkit.task(name="nb.broken", queue="nb")
async def broken(ctx: jobkit.Context) -> None:
    raise ValueError("the spreadsheet has no header row")


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec for this interpreter, a fresh IPython profile, and no backend configured."""
    spec = tmp_path / "jupyter" / "kernels" / "jobkit-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jobkit test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    for var in ("JOBKIT_URL", "REDIS_URL", "JOBKIT_REQUIRE_REDIS"):
        monkeypatch.delenv(var, raising=False)
    return "jobkit-test"
