"""`JobHandle.progress()` never goes back to what was before its first read of the job.

Events published between the handle's subscription and that read arrive after it; the handle must not yield their
(older) progress after the newer value it read. Ordered here on purpose: the updates happen inside the read.
"""

from __future__ import annotations

import time
from typing import ClassVar

import jobkit
from jobkit.models import Job, Progress


class ReadsLate(jobkit.JobHandle[None]):
    """A handle whose first read of the job comes after the worker reported 10 % and 60 %."""

    steps: ClassVar[list[float]] = [10.0, 60.0]

    async def job(self) -> Job:
        while self.steps:
            percent = self.steps.pop(0)
            assert await self.backend.set_progress(self.queue, "w1", self.id, Progress(percent=percent))
        return await super().job()


async def test_progress_skips_updates_older_than_its_first_read() -> None:
    backend = await jobkit.connect("memory://")
    job = await jobkit.Queue("late", backend=backend).add("t", {})
    claimed = await backend.claim("late", "w1", limit=1, lease=30, now=time.time())
    assert [j.id for j in claimed.jobs] == [job.id]
    seen = []
    async for p in ReadsLate(job, backend).progress():
        seen.append(p.percent)
        if len(seen) == 1:
            assert await backend.set_progress("late", "w1", job.id, Progress(percent=80.0))
        elif p.percent == 80.0:
            break
    assert seen == [60.0, 80.0], "the 10 % and 60 % events came after the read of 60 %: only newer ones may follow"
    await backend.close()
