"""One answer, through every policy: reserve the worst-case cost, take the shared rate (both prefetched by the call
before, in a steady stream), call, settle to the actual cost, and retry, wait out a 429 or re-ask as the failure
calls for. Every attempt's tokens and cost are counted."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .._quota import Budget, SharedRate
from .ahead import Ahead
from .client import Answer, CallFailed, ChatClient
from .errors import ProviderRefused
from .models import ModelUsage, Retry
from .outputs import Invalid, parse_answer, reask_message, response_format
from .prices import Pricer

__all__ = ["BudgetExhausted", "Caller", "Generated", "ItemFailed", "PromptEstimate"]

MESSAGE_OVERHEAD = 4  # tokens a chat message costs beyond its text
REPLY_OVERHEAD = 3
SAFETY = 1.25  # margin over the highest tokens-per-byte ratio seen
LOW = 0.2  # the provider's own "left" numbers matter when under this share of our limit
EPSILON = 1e-9


class ItemFailed(Exception):
    """This item cannot be generated (the batch goes on, or stops, by its error policy)."""

    def __init__(self, message: str, status: int | None = None, section: str | None = None) -> None:
        super().__init__(message)
        self.status, self.section = status, section


class BudgetExhausted(Exception):
    """The cost limit leaves no room for another call."""


@dataclass
class Generated:
    text: str
    data: dict[str, Any] | None
    usage: ModelUsage


class PromptEstimate:
    """Prompt tokens before the call, from the request's size: 1 token per 2 bytes until the provider's counts
    teach a closer ratio (the highest seen, with a margin), so the reservation stays a worst case."""

    def __init__(self) -> None:
        self.ratio = 0.5
        self.taught = False

    def tokens(self, messages: list[dict[str, str]]) -> int:
        size = sum(len(m["content"].encode()) for m in messages)
        return math.ceil(size * self.ratio) + MESSAGE_OVERHEAD * len(messages) + REPLY_OVERHEAD

    def learn(self, messages: list[dict[str, str]], actual: int) -> None:
        size = sum(len(m["content"].encode()) for m in messages)
        text_tokens = actual - MESSAGE_OVERHEAD * len(messages) - REPLY_OVERHEAD
        if size > 0 and text_tokens > 0:
            seen = min(1.0, text_tokens / size * SAFETY)
            self.ratio = max(self.ratio, seen) if self.taught else seen
            self.taught = True


@dataclass
class Caller:
    """Calls for one job: its client, rate, budget and prices; `usage` and `recent` feed its progress. With
    `prefetch`, each call takes the next one's reservation and rate slot while it is in flight (`Ahead`); up to
    `concurrency` calls run at once."""

    client: ChatClient
    rate: SharedRate
    budget: Budget
    price: Pricer
    model: str
    retry: Retry
    max_reasks: int
    temperature: float | None
    on_settle: Callable[[], None] = lambda: None
    estimate: PromptEstimate = field(default_factory=PromptEstimate)
    usage: ModelUsage = field(default_factory=ModelUsage)
    recent: deque[float] = field(default_factory=deque)  # monotonic times of this job's calls, the last minute's
    settled: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever a reservation closes
    settling: set[asyncio.Task[None]] = field(default_factory=set)  # settlements still on their way to the backend
    # With answers too fast for a prefetch to hide behind, a call's settlement waits for the next call's reservation
    # and goes in the same step (one transaction on SQLite) instead of one of its own: (reserved, cost) of each.
    deferred: list[tuple[float, float]] = field(default_factory=list)
    short_of_room: int = 0  # calls waiting for a settlement to free room in the budget: none is deferred then
    concurrency: int = 1
    prefetch: bool = False
    writing: set[asyncio.Future[None]] = field(default_factory=set)  # requests going out, each done once written
    ahead: Ahead = field(init=False)

    def __post_init__(self) -> None:
        self.ahead = Ahead(self.budget, self.rate, self.concurrency, self.settled, self._after_writes,
                           self._send_deferred, enabled=self.prefetch)

    async def _after_writes(self) -> None:
        """Wait until the requests being written now are on the wire: background backend work (settlements,
        prefetches) goes after them, so it never delays a request going out. Later requests are not waited for."""
        if self.writing:
            await asyncio.wait(list(self.writing))

    async def generate(self, messages: list[dict[str, str]], *, max_tokens: int,
                       response_model: type[BaseModel] | None, temperature: float | None = None) -> Generated:
        """The answer to `messages`, validated by `response_model` (re-asked up to max_reasks times)."""
        item = ModelUsage()
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens}
        chosen = self.temperature if temperature is None else temperature
        if chosen is not None:
            body["temperature"] = chosen
        if response_model is not None:
            body["response_format"] = response_format(response_model)
        messages = list(messages)
        for reask in range(self.max_reasks + 1):
            answer = await self._attempts({**body, "messages": messages}, item)
            try:
                return Generated(answer.content, parse_answer(answer.content, response_model), item)
            except Invalid as bad:
                assert response_model is not None
                if reask == self.max_reasks:
                    raise ItemFailed(f"the answer never matched {response_model.__name__} after {reask + 1} tries:"
                                     f" {bad.problems}", 200) from None
                messages += [{"role": "assistant", "content": answer.content},
                             {"role": "user", "content": reask_message(bad.problems, response_model)}]
        raise AssertionError("unreachable")

    async def _attempts(self, body: dict[str, Any], item: ModelUsage) -> Answer:
        """One answer, retrying 5xx/timeouts/resets `retry.attempts` times; 429s wait and spend no attempt."""
        attempt, rate_waited = 1, 0.0
        while True:
            try:
                return await self._call(body, item)
            except CallFailed as failed:
                if failed.kind == "fatal":
                    raise ProviderRefused(f"{failed}: fix the key or the account of provider"
                                          f" {self.client.provider.name!r}, then retry the job (results already in"
                                          " the sink are kept)") from None
                if failed.kind == "item":
                    raise ItemFailed(str(failed), failed.status) from None
                if failed.kind == "rate":
                    self.ahead.rate_told(low=True)
                    wait = self._rate_wait(failed, attempt)
                    rate_waited += wait
                    if rate_waited > self.retry.max_rate_wait:
                        raise ItemFailed(f"{failed}; the provider kept refusing for over"
                                         f" {self.retry.max_rate_wait:g}s", failed.status) from None
                    await self.rate.pause(wait)
                    await asyncio.sleep(wait)
                    continue
                if attempt >= self.retry.attempts:
                    raise ItemFailed(f"{failed} (attempt {attempt} of {self.retry.attempts})", failed.status) from None
                await asyncio.sleep(max(self.retry.backoff.seconds(attempt), failed.wait or 0.0))
                attempt += 1

    def _rate_wait(self, failed: CallFailed, attempt: int) -> float:
        """How long a 429 says to wait: Retry-After, else the reset of what ran out, else the backoff."""
        if failed.wait is not None:
            return failed.wait
        lim = failed.limits
        resets = [r for left, r in ((lim.requests_left, lim.requests_reset), (lim.tokens_left, lim.tokens_reset))
                  if r is not None and (left is None or left < 1)]
        return max(resets) if resets else self.retry.backoff.seconds(attempt)

    async def _reserve(self, worst: float) -> None:
        while True:
            granted, spend = await self.budget.reserve(worst)
            self.ahead.seen(spend)
            if granted:
                return
            if await self.ahead.give_back():  # our own unused prefetch may hold the room this call needs
                continue
            if self.deferred:  # our own settlements may hold the room: send them, then ask again
                await asyncio.gather(*self._send_deferred())
                continue
            if not self.budget.can_ever_fit(worst, spend) or spend.reserved <= EPSILON:
                raise BudgetExhausted
            self.settled.clear()  # calls in flight may settle for less than they reserved: wait for one
            self.short_of_room += 1
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.settled.wait(), 1.0)
            finally:
                self.short_of_room -= 1

    async def _call(self, body: dict[str, Any], item: ModelUsage) -> Answer:
        messages = body["messages"]
        prompt = self.estimate.tokens(messages)
        units = prompt + body["max_tokens"]
        worst = self.price(prompt, 0, body["max_tokens"])
        securing = self.ahead.clock()
        prefetched, taking = await self._secure(worst, units)
        reserved = prefetched or worst
        sent = False
        try:
            if taking is not None:
                await taking
            if taking is not None or not prefetched:
                self.ahead.tripped(self.ahead.clock() - securing)
            self._count_call()
            sent = True
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.writing.add(written)
            sent_at = self.ahead.start(worst, units)
            try:
                answer = await self.client.complete(body, lambda: _resolve(written))
            finally:
                _resolve(written)
                self.writing.discard(written)
                self.ahead.answered(sent_at)
        except CallFailed as failed:
            await self._close(item, reserved, worst if failed.billed_unknown else 0.0)
            await self._observe(failed.limits)
            raise
        except BaseException:  # cancelled: a request that went out may have been billed
            await asyncio.shield(self._close(item, reserved, worst if sent else 0.0, counted=sent))
            raise
        self.estimate.learn(messages, answer.tokens_in)
        cost = self.price(answer.tokens_in, answer.tokens_cached, answer.tokens_out)
        await self._close(item, reserved, cost, answer.tokens_in, answer.tokens_cached, answer.tokens_out)
        await self._observe(answer.limits)
        return answer

    async def _secure(self, worst: float, units: float) -> tuple[float, asyncio.Future[float] | None]:
        """The call's reservation and rate slot: the amount taken ahead (0: reserved now, `worst`) and the slot being
        taken now (None: taken ahead). What was not taken ahead is taken at once, both together and with the
        deferred settlements (one transaction on SQLite, overlapping round trips on Redis): a slot taken for a call
        the budget then refuses is only unused; a slot taken ahead that went stale while the call waited for room in
        the budget is not used."""
        prefetched, granted = await self.ahead.claim(worst, units)
        if not (prefetched and granted is not None):
            self._send_deferred()
        taking = None if granted is not None else asyncio.ensure_future(self.rate.acquire(units))
        if not prefetched:
            try:
                await self._reserve(worst)
            except BaseException:
                if taking is not None:
                    taking.cancel()
                    await asyncio.gather(taking, return_exceptions=True)
                raise
            if granted is not None and not self.ahead.fresh(granted):
                taking = asyncio.ensure_future(self.rate.acquire(units))
        return prefetched, taking

    async def _close(self, item: ModelUsage, reserved: float, cost: float, tokens_in: int = 0, cached: int = 0,
                     tokens_out: int = 0, *, counted: bool = True) -> None:
        """Count a call (on the item and the job) and settle its reservation to what it cost, in the background:
        until it lands the budget only holds more than was spent, and the next call need not wait for it."""
        for u in (item, self.usage):
            u.calls += counted
            u.tokens_in += tokens_in
            u.tokens_cached += cached
            u.tokens_out += tokens_out
            u.cost += cost
        self.on_settle()
        if self.prefetch and not self.ahead.worth_it() and not self.short_of_room:
            self.deferred.append((reserved, cost))
            return
        self._settle_soon(self._settle(reserved, cost))

    def _settle_soon(self, settling: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(settling)
        self.settling.add(task)
        task.add_done_callback(self.settling.discard)
        return task

    def _send_deferred(self) -> list[asyncio.Task[None]]:
        """Settle the deferred reservations now, together, in the step about to be taken."""
        if not self.deferred:
            return []
        deferred, self.deferred = self.deferred, []
        reserved, cost = sum(r for r, _ in deferred), sum(c for _, c in deferred)
        return [self._settle_soon(self._settle_now(reserved, cost))]

    async def _settle(self, reserved: float, cost: float) -> None:
        await self._after_writes()
        await self.ahead.landed()  # the next call may be waiting for the prefetch; this settlement waits for nobody
        await self._settle_now(reserved, cost)

    async def _settle_now(self, reserved: float, cost: float) -> None:
        self.ahead.seen(await self.budget.settle(reserved, cost))
        self.settled.set()

    async def drain(self) -> None:
        """Stop prefetching and release an unused prefetch, then wait until every settlement has reached the
        backend; raises the first that failed."""
        try:
            await self.ahead.close()
        finally:
            self._send_deferred()
            await self._drain_settlements()

    async def _drain_settlements(self) -> None:
        while self.settling:
            tasks = list(self.settling)
            self.settling.difference_update(tasks)
            await asyncio.gather(*tasks)

    def _count_call(self) -> None:
        now = time.monotonic()
        self.recent.append(now)
        while self.recent and self.recent[0] < now - 60:
            self.recent.popleft()

    async def _observe(self, limits: Any) -> None:
        rate = self.rate
        low_requests = limits.requests_left is not None and limits.requests_left < rate.requests * LOW
        low_tokens = (rate.units is not None and limits.tokens_left is not None
                      and limits.tokens_left < rate.units * LOW)
        self.ahead.rate_told(low=low_requests or low_tokens)
        if low_requests or low_tokens:
            await rate.observe(limits.requests_left, limits.requests_reset, limits.tokens_left, limits.tokens_reset)


def _resolve(written: asyncio.Future[None]) -> None:
    if not written.done():
        written.set_result(None)
