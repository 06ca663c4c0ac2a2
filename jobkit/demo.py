"""`jobkit demo`: a few jobs of different kinds, run by an embedded worker, with progress in the terminal."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any, TextIO

from pydantic import BaseModel

from .config import BackendLike, get_backend, mask_url
from .context import Context
from .handle import JobHandle
from .models import Backoff, Job, JobState
from .notebook.fmt import error_summary
from .notebook.text import watch_text
from .run import shutdown, submit
from .task import task

__all__ = ["main"]


class ImportSpec(BaseModel):
    rows: int = 5_000
    batch: int = 500


class BatchSpec(BaseModel):
    prompts: list[str]


@task(name="demo.import_rows", queue="demo")
async def import_rows(ctx: Context, spec: ImportSpec) -> dict[str, int]:
    """Pretend to import rows in batches, as an Excel import would."""
    done = 0
    while done < spec.rows:
        await asyncio.sleep(0.05)
        done = min(spec.rows, done + spec.batch)
        await ctx.progress(100 * done / spec.rows, f"{done:,}/{spec.rows:,} rows", rows=done)
    return {"rows_imported": done}


@task(name="demo.generate", queue="demo", attempts=3, backoff=Backoff.fixed(0.2))
async def generate(ctx: Context, spec: BatchSpec) -> list[str]:
    """Pretend to call an AI model per prompt; the first attempt hits a (simulated) rate limit."""
    out = []
    for i, prompt in enumerate(spec.prompts, 1):
        await asyncio.sleep(0.08)
        if ctx.attempt == 1 and i == 3:
            raise RuntimeError("429 Too Many Requests (simulated): retrying with backoff")
        out.append(prompt.upper())
        await ctx.progress(100 * i / len(spec.prompts), f"prompt {i}/{len(spec.prompts)} (attempt {ctx.attempt})")
    return out


@task(name="demo.aggregate", queue="demo")
async def aggregate(ctx: Context, days: int) -> dict[str, float]:
    """Pretend to aggregate daily metrics."""
    total = 0.0
    rng = random.Random(days)
    for d in range(1, days + 1):
        await asyncio.sleep(0.02)
        total += rng.uniform(90, 110)
        await ctx.progress(100 * d / days, f"day {d}/{days}")
    return {"days": days, "mean": round(total / days, 2)}


def _say(out: TextIO, line: str) -> None:
    """Print a line: cut to the width on a terminal (by rich), whole elsewhere."""
    if out.isatty():
        from rich.console import Console

        Console(file=out).print(line, no_wrap=True, overflow="ellipsis", markup=False, highlight=False)
    else:
        out.write(line + "\n")
        out.flush()


async def demo(backend: BackendLike = None, out: TextIO = sys.stdout) -> list[Job]:
    """Submit three demo jobs (one retries after a simulated rate limit) and show them until they finish."""
    b = await get_backend(backend)
    _say(out, f"jobkit demo on {mask_url(b.url)}: an embedded worker runs the jobs")
    started = time.monotonic()
    handles: list[JobHandle[Any]] = [
        await submit(import_rows, ImportSpec(), backend=b),
        await submit(generate, BatchSpec(prompts=["summarise q3", "draft email", "tag tickets", "translate faq"]),
                     backend=b),
        await submit(aggregate, 60, backend=b),
    ]
    jobs = await watch_text(handles, out)
    for h, j in zip(handles, jobs, strict=True):
        outcome = f"-> {await h.result()}" if j.state is JobState.COMPLETED else f"error: {error_summary(j)}"
        _say(out, f"{j.name}: {j.state.value} after {j.attempts} attempt(s) {outcome}")
    _say(out, f"done in {time.monotonic() - started:.1f}s")
    return jobs


async def _demo_then_shutdown(url: str | None) -> list[Job]:
    try:
        return await demo(url)
    finally:
        await shutdown()


def main(url: str | None = None) -> int:
    jobs = asyncio.run(_demo_then_shutdown(url))
    return 0 if all(j.state.value == "completed" for j in jobs) else 1
