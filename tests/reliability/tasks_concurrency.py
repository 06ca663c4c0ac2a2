"""A task for the worker processes of test_concurrency_processes.py: it logs its start and end to a shared file."""

from __future__ import annotations

import asyncio
import os

import jobkit


def _log(line: str) -> None:
    """Append one line to the file named by JOBKIT_RUN_LOG (one write: atomic with O_APPEND)."""
    fd = os.open(os.environ["JOBKIT_RUN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@jobkit.task(queue="limited")
async def limited(ctx: jobkit.Context, seconds: float) -> int:
    """Logs '+ <job id>', runs for `seconds`, logs '- <job id>': the file's lines give how many ran at once."""
    _log(f"+ {ctx.job_id}\n")
    await asyncio.sleep(seconds)
    _log(f"- {ctx.job_id}\n")
    return os.getpid()
