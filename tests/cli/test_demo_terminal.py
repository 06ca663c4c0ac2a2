"""`jobkit demo` as people see it: on a real pseudo-terminal of 80 and 120 columns, and piped to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .terminal import Terminal

NAMES = ("demo.import_rows", "demo.generate", "demo.aggregate")
ESC = "\x1b"


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "JOBKIT_URL", "REDIS_URL", "JOBKIT_REQUIRE_REDIS", "NO_COLOR")}
    return {**env, "TERM": "xterm-256color"}


def head_rows(lines: list[str], name: str) -> list[int]:
    """Rows that start a job's block: its name, then padding (a summary line has a colon after the name)."""
    return [i for i, line in enumerate(lines) if line.startswith(name + " ")]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("cols", [80, 120])
def test_demo_redraws_in_place_on_a_real_terminal(cols: int, tmp_path: Path) -> None:
    term = Terminal(cols, rows=30)
    frames: list[list[str]] = []

    def check(lines: list[str]) -> None:
        frames.append(lines)
        for name in NAMES:  # a bar that wrapped and was redrawn one row short would leave copies behind
            assert len(head_rows(lines, name)) <= 1, "\n".join(lines)

    argv = [sys.executable, "-m", "jobkit", "demo", "--url", f"sqlite:///{tmp_path / 'demo.db'}"]
    assert term.run(argv, demo_env(), check, cwd=str(tmp_path)) == 0, term.raw.decode(errors="replace")[-2000:]
    screen = term.lines
    text = "\n".join(screen)
    heads = [head_rows(screen, name) for name in NAMES]
    assert all(len(rows) == 1 for rows in heads), text
    first = heads[0][0]
    assert [rows[0] for rows in heads] == [first, first + 2, first + 4], text  # two rows per job, in order
    for rows in heads:
        assert screen[rows[0]].endswith("100% completed"), text
        assert screen[rows[0] + 1].startswith("  "), text  # its detail row
    assert "attempt 1 failed: RuntimeError: 429" in screen[heads[1][0] + 1], text  # why the bar started again
    assert screen[first + 6] == "3 of 3 finished · 3 completed", text
    assert screen[first + 7].startswith("demo.import_rows: completed after 1 attempt(s)"), text
    assert any(line.startswith("done in ") for line in screen), text
    assert len(frames) > 3  # it was redrawn live, not printed once at the end


@pytest.mark.timeout(90)
def test_demo_piped_prints_plain_lines_with_the_retry_reason(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "jobkit", "demo", "--url", f"sqlite:///{tmp_path / 'demo.db'}"]
    out = subprocess.run(argv, env={**demo_env(), "COLUMNS": "80"}, capture_output=True, text=True, timeout=80,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ESC not in out.stdout and "\r" not in out.stdout
    lines = out.stdout.splitlines()
    retry = [line for line in lines if line.startswith("demo.generate ") and " delayed " in line]
    assert retry and "attempt 1 failed: RuntimeError: 429 Too Many Requests (simulated)" in retry[0], out.stdout
    finals = [line for line in lines if "100.0% completed" in line]
    assert [line.split()[0] for line in finals] == list(NAMES), out.stdout
    assert "demo.generate: completed after 2 attempt(s)" in out.stdout
