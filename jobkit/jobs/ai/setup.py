"""Everything a payload names, resolved and checked before any call: provider, price, templates, output models."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from ... import Context
from .._quota import Budget, SharedRate
from .calls import Caller
from .client import ChatClient
from .models import _Call
from .prices import pricer
from .providers import Provider, get_provider

__all__ = ["LIMITS_QUEUE", "budget_for", "make_caller", "rate_for"]

LIMITS_QUEUE = "jobkit-ai"  # where the shared rate counters live: every worker on the backend shares them


def rate_for(ctx: Context, provider: Provider, model: str) -> SharedRate:
    """Requests and tokens per minute of `model` at `provider`, shared by every worker on the backend."""
    return SharedRate(ctx.backend, LIMITS_QUEUE, f"{provider.name}:{model}", provider.requests_per_minute,
                      provider.tokens_per_minute)


def budget_for(ctx: Context, name: str | None, limit: float | None) -> Budget:
    """This job's own budget, or the named one every job naming it shares (its limit: this payload's)."""
    key = f"ai-budget:{name}" if name else f"ai-cost:{ctx.job_id}"
    return Budget(ctx.backend, ctx.job.queue, key, limit)


@dataclass
class Prepared:
    provider: Provider
    caller: Caller


def make_caller(ctx: Context, p: _Call, budget: Budget, concurrency: int, *, prefetch: bool) -> Prepared:
    """`prefetch` for a stream of calls; a single answer leaves it off, or its prefetch would only waste a rate slot
    (the shared rate would count two requests for its one)."""
    provider = get_provider(p.provider)
    provider.check_model(p.model)
    price = pricer(provider, p.model)  # an unknown price fails the job before any call
    client = ChatClient(provider, timeout=p.request_timeout, connections=concurrency)
    caller = Caller(client, rate_for(ctx, provider, p.model), budget, price, p.model, p.retry, p.max_reasks,
                    p.temperature, concurrency=concurrency, prefetch=prefetch)
    return Prepared(provider, caller)


def model_of(ref: str | None) -> type[BaseModel] | None:
    from .outputs import resolve_response_model

    return None if ref is None else resolve_response_model(ref)
