"""What a call costs: prices per model set by the worker's code, else genai-prices' table (shipped in the package,
read offline). A model with no known price is refused, never counted as free.

Cached input tokens are a part of the input tokens, priced at the cached rate when the model has one. The Batch
API's price is genai-prices' batch price where it has one, else the live price times the model's batch factor
(BATCH_FACTOR, half, unless `set_price(..., batch_factor=)` says otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from .._registry import shorten
from .errors import AISetupError
from .providers import Provider

__all__ = ["BATCH_FACTOR", "Price", "Pricer", "batch_pricer", "forget_prices", "pricer", "set_price"]

BATCH_FACTOR = 0.5  # a Batch API call's price against a live call's, where the price table has no batch price
MILLION = 1_000_000
LINEAR_UP_TO = 100_000  # tokens up to which a genai-prices price is checked to be per token
Pricer = Callable[[int, int, int], float]  # (input tokens, of which cached, output tokens) -> USD


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    batch_factor: float = BATCH_FACTOR

    def cost(self, tokens_in: int, cached: int, tokens_out: int) -> float:
        cached = min(cached, tokens_in)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((tokens_in - cached) * self.input + cached * cached_rate + tokens_out * self.output) / MILLION


_prices: dict[tuple[str | None, str], Price] = {}


def set_price(model: str, *, input: float, output: float, cached_input: float | None = None,
              provider: str | None = None, batch_factor: float = BATCH_FACTOR) -> Price:
    """Price `model` (USD per million tokens), for every provider or only `provider`; overrides genai-prices.
    A local model that costs nothing is priced 0 here, explicitly. `batch_factor`: the Batch API's price against
    these (half by default)."""
    values = [input, output, batch_factor] + ([] if cached_input is None else [cached_input])
    if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"prices of {model!r} are finite numbers of USD per million tokens, 0 or more")
    price = _prices[(provider, model)] = Price(float(input), float(output),
                                               None if cached_input is None else float(cached_input),
                                               float(batch_factor))
    return price


def forget_prices() -> None:
    _prices.clear()


def _genai_prices(provider: Provider, model: str, context: dict[str, str] | None = None) -> Pricer | None:
    try:
        import genai_prices
    except ImportError:
        return None
    kwargs: dict[str, Any] = {"provider_id": provider.price_provider} if provider.price_provider else {}
    if context:
        kwargs["price_context"] = context

    def exact(tokens_in: int, cached: int, tokens_out: int) -> float:
        usage = genai_prices.Usage(input_tokens=tokens_in, cache_read_tokens=min(cached, tokens_in),
                                   output_tokens=tokens_out)
        return float(genai_prices.calc_price(usage, model, **kwargs).total_price)

    try:
        linear = Price(exact(MILLION, 0, 0), exact(0, 0, MILLION), exact(MILLION, MILLION, 0))
    except LookupError:
        return None
    # A table lookup costs about 0.3 ms: prices that are per token up to LINEAR_UP_TO (most models) are computed
    # here; a tiered price (by prompt size, say) is looked up for every call.
    if not all(math.isclose(exact(i, c, o), linear.cost(i, c, o), rel_tol=1e-9, abs_tol=1e-12)
               for i, c, o in ((1000, 0, 0), (LINEAR_UP_TO, 0, 0), (LINEAR_UP_TO, LINEAR_UP_TO // 2, LINEAR_UP_TO))):
        return exact
    return lambda i, c, o: linear.cost(i, c, o) if i <= LINEAR_UP_TO and o <= LINEAR_UP_TO else exact(i, c, o)


def pricer(provider: Provider, model: str) -> Pricer:
    """How to price calls to `model` at `provider`; AISetupError when no price is known."""
    own = _prices.get((provider.name, model)) or _prices.get((None, model))
    if own is not None:
        return own.cost
    found = _genai_prices(provider, model)
    if found is not None:
        return found
    raise AISetupError(f"no price is known for model {shorten(model)!r}, and a call is never counted as free: set one"
                       f" in the worker's code with jobkit.jobs.ai.set_price({shorten(model)!r}, input=..., output=...,"
                       " cached_input=...) (USD per million tokens; 0 for a free local model), or install"
                       " jobkit[ai] for genai-prices' table")


def batch_pricer(provider: Provider, model: str) -> Pricer:
    """How to price Batch API calls to `model` at `provider`; AISetupError when no price is known."""
    own = _prices.get((provider.name, model)) or _prices.get((None, model))
    if own is not None:
        return lambda i, c, o: own.cost(i, c, o) * own.batch_factor
    live = pricer(provider, model)
    batch = _genai_prices(provider, model, {"processing": "batch"})
    if batch is not None and not math.isclose(batch(MILLION, 0, MILLION), live(MILLION, 0, MILLION)):
        return batch  # the table has a batch price of its own
    return lambda i, c, o: live(i, c, o) * BATCH_FACTOR
