"""What a user's type checker must see (checked by test_typing.py with mypy --strict, from outside the repo)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from typing_extensions import assert_type

import jobkit


class Thumb(BaseModel):
    url: str


@jobkit.task(name="typing.thumbnail", queue="images", attempts=3)
async def thumbnail(ctx: jobkit.Context, payload: Thumb) -> str:
    await ctx.progress(10, "downloading")
    return payload.url


@jobkit.task(name="typing.count")
async def count(ctx: jobkit.Context, n: int) -> int:
    return n


async def main() -> None:
    assert_type(thumbnail, jobkit.Task[str])
    assert_type(await jobkit.run(thumbnail, {"url": "u"}), str)
    assert_type(await jobkit.run(count, 3), int)
    handle = await jobkit.submit(thumbnail, Thumb(url="u"))
    assert_type(handle, jobkit.JobHandle[str])
    assert_type(await handle.result(timeout=3), str)
    assert_type(await handle, str)
    assert_type(jobkit.run_sync(count, 2), int)
    assert_type(await jobkit.run("typing.count", 2), Any)  # by name: the result type is not known statically
    job = await jobkit.Queue("images").add(thumbnail, {"url": "u"})
    assert_type(job, jobkit.Job)
    assert_type(job.state, jobkit.JobState)
