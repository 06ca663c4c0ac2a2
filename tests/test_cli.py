"""`jobkit worker --loop`: which event loop the CLI runs on."""

from __future__ import annotations

import asyncio
import sys

import pytest

from jobkit.cli import _run_on_loop
from jobkit.errors import ConfigError


async def _loop_module() -> int:
    return 1 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 0


def test_auto_and_uvloop_run_on_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert _run_on_loop(_loop_module(), "auto") == 1
    assert _run_on_loop(_loop_module(), "uvloop") == 1


def test_asyncio_runs_on_asyncios_own_loop() -> None:
    assert _run_on_loop(_loop_module(), "asyncio") == 0


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert _run_on_loop(_loop_module(), "auto") == 0
    with pytest.raises(ConfigError, match=r"pip install '\.\[uvloop\]' in jobkit's checkout"):
        _run_on_loop(_loop_module(), "uvloop")
