"""A task on a 1-second schedule, for the worker processes of test_schedule_processes.py."""

from __future__ import annotations

import os

import jobkit


# overlap="allow": the test kills a worker, which may die holding a tick's job; with the default "skip" the ticks
# after it would be skipped (rightly) until that job's lease ran out, and this test is about one job per tick.
@jobkit.task(queue="ticks", every=1, overlap="allow")
async def every_second(ctx: jobkit.Context) -> int:
    """Appends '<job id> <pid>' to the file named by JOBKIT_TICK_LOG (one line, one write: atomic with O_APPEND)."""
    line = f"{ctx.job_id} {os.getpid()}\n".encode()
    fd = os.open(os.environ["JOBKIT_TICK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return os.getpid()
