"""`jobkit.jobs.ai_batch` and `jobkit.jobs.ai_generate`: the built-in AI generation tasks."""

from __future__ import annotations

from ... import Backoff, Context, task
from .models import AIBatch, AIGenerate, BatchReport, GenerateResult

__all__ = ["ai_batch", "ai_generate"]


@task(name="jobkit.jobs.ai_batch", queue="default", attempts=3, backoff=Backoff.exponential(10.0, max_delay=300.0))
async def ai_batch(ctx: Context, payload: AIBatch) -> BatchReport:
    """Generate each section for each item into `payload.sink`, under the shared rate limits and the cost limit.

    Resumes after the items already handled on a retry, paying for none twice (see docs/ai_batch.md).
    """
    from .batch import BatchRun  # the HTTP client loads in the worker, not where jobs are only enqueued

    if payload.mode == "batch_api":
        from .batch_api import BatchAPIRun

        return await BatchAPIRun(ctx, payload).run()
    return await BatchRun(ctx, payload).run()


@task(name="jobkit.jobs.ai_generate", queue="default", attempts=3, backoff=Backoff.exponential(10.0, max_delay=300.0))
async def ai_generate(ctx: Context, payload: AIGenerate) -> GenerateResult:
    """Generate one answer for `payload.item`: the same provider, limits, prices and retries as a batch."""
    from .generate import generate_one

    return await generate_one(ctx, payload)
