"""One attempt of `ai_generate`: one item, one answer, the same limits, prices and budget as a batch. The answer is
checkpointed as soon as it is paid for, so a retried job returns it instead of paying again."""

from __future__ import annotations

from ... import Context
from .calls import BudgetExhausted, ItemFailed
from .errors import AISetupError, ItemsFailed
from .models import AIGenerate, GenerateResult
from .prompts import MissingField, compile_template
from .setup import budget_for, make_caller, model_of

__all__ = ["generate_one"]


async def generate_one(ctx: Context, p: AIGenerate) -> GenerateResult:
    if isinstance(ctx.checkpoint, dict) and "result" in ctx.checkpoint:
        return GenerateResult.model_validate(ctx.checkpoint["result"])
    prompt = compile_template(p.prompt, p.template)
    system = None if p.system is None else compile_template(p.system, p.template)
    model = model_of(p.response_model)
    try:
        messages = ([] if system is None else [{"role": "system", "content": system(p.item)}]) + [
            {"role": "user", "content": prompt(p.item)}]
    except MissingField as exc:
        raise AISetupError(f"the prompt cannot be filled: {exc}") from None
    budget = budget_for(ctx, None, p.cost_limit)
    caller = make_caller(ctx, p, budget, 1, prefetch=False).caller
    await ctx.progress(0, f"asking {p.model}")
    try:
        got = await caller.generate(messages, max_tokens=p.max_tokens, response_model=model)
    except BudgetExhausted:
        raise ItemsFailed(f"the cost limit (${p.cost_limit}) leaves no room for this call, whose worst case costs more:"
                          " raise cost_limit or lower max_tokens") from None
    except ItemFailed as failed:
        raise ItemsFailed(str(failed)) from None
    finally:
        try:
            await caller.drain()
        finally:
            await caller.client.aclose()
    u = got.usage
    result = GenerateResult(text=got.text, data=got.data, model=p.model, calls=u.calls, tokens_in=u.tokens_in,
                            tokens_cached=u.tokens_cached, tokens_out=u.tokens_out, cost=round(u.cost, 9))
    await ctx.save_checkpoint({"result": result.model_dump(mode="json")})
    await budget.backend.drop_budget(budget.queue, budget.key)
    await ctx.progress(100, f"{u.tokens_in:,} tokens in, {u.tokens_out:,} out · ${u.cost:,.4f}", tokens_in=u.tokens_in,
                       tokens_out=u.tokens_out, cost=round(u.cost, 6), cost_limit=p.cost_limit)
    return result
