"""jobkit ships `py.typed`: a user's mypy sees `run()` return the task's type and `submit()` a typed handle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _mypy(tmp_path: Path, name: str) -> subprocess.CompletedProcess[str]:
    # From a directory outside the repo, so mypy finds jobkit where a user's would: installed, by its py.typed.
    shutil.copy(HERE / name, tmp_path / name)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".cache"), name],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )


@pytest.mark.timeout(300)
def test_user_code_type_checks_with_the_tasks_own_types(tmp_path: Path) -> None:
    out = _mypy(tmp_path, "user_code.py")
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.timeout(300)
def test_a_wrong_result_type_is_caught(tmp_path: Path) -> None:
    out = _mypy(tmp_path, "user_mistake.py")
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'user_mistake.py:14: error: Argument 1 to "run" has incompatible type "Task[str]"' in out.stdout
