"""One attempt of an AI batch: resume from the checkpoint, generate each item's sections with `concurrency` calls in
flight, write results to the sink `batch_size` at a time, and checkpoint every item as it is paid for.

Order of writes, for exactly once: a paid result goes into the checkpoint (`pending`) before it goes to the sink, and
the sink says on open which keys it already holds, so a resumed attempt writes what is pending and pays for nothing
twice. Money follows the budget in the backend: a dead attempt's open reservations are counted on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from pydantic import BaseModel

from ... import Context
from .calls import BudgetExhausted, ItemFailed
from .errors import AISetupError, ItemsFailed, ProviderRefused
from .models import ERRORS_KEPT, AIBatch, BatchReport, BatchState, ItemError, ModelUsage
from .prompts import MissingField, Template, compile_template
from .saver import Saver
from .setup import budget_for, make_caller, model_of
from .sinks import Sink, open_sink
from .sources import ItemSource, open_source

__all__ = ["BatchRun"]

CHUNK = 256  # items read from a file source per trip to a thread
EPSILON = 1e-9


def identity(p: AIBatch) -> str:
    """What the results depend on: a checkpoint, or an earlier job to resume, must have been made for the same."""
    parts = p.model_dump(mode="json", include={"items", "source", "key", "keep", "sections", "system", "template",
                                               "model", "response_model", "provider", "sink"})
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class _Section:
    def __init__(self, name: str, p: AIBatch) -> None:
        s = p.sections[name]
        self.name = name
        self.prompt: Template = compile_template(s.prompt, p.template)
        system = s.system if s.system is not None else p.system
        self.system: Template | None = None if system is None else compile_template(system, p.template)
        self.model: type[BaseModel] | None = model_of(s.response_model or p.response_model)
        self.max_tokens = s.max_tokens or p.max_tokens
        self.temperature = s.temperature

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        out = [] if self.system is None else [{"role": "system", "content": self.system(item)}]
        return [*out, {"role": "user", "content": self.prompt(item)}]


class BatchRun:
    """Runs one attempt; `run()` returns the report, or raises (Unrecoverable for what a retry cannot fix)."""

    def __init__(self, ctx: Context, payload: AIBatch) -> None:
        self.ctx, self.p = ctx, payload
        self.sections = [_Section(name, payload) for name in payload.sections]  # bad templates fail here
        self.started = time.monotonic()
        self.done_here = 0  # items handled by this attempt, for the rate and ETA
        self.stop: BaseException | None = None  # why no more items start
        self.stopped: str | None = None
        self.write_lock = asyncio.Lock()
        self.state = BatchState(run=ctx.job_id, identity=identity(payload))

    # -- before the first call -----------------------------------------------------------------------------------
    async def _load_state(self, source: ItemSource) -> None:
        ident = self.state.identity
        if self.ctx.checkpoint:
            self.state = BatchState.model_validate(self.ctx.checkpoint)
        elif self.p.resume:
            earlier = await self.ctx.backend.get(self.ctx.job.queue, self.p.resume)
            if earlier is None or not earlier.checkpoint:
                raise AISetupError(f"resume={self.p.resume!r}: no such job with progress in queue"
                                   f" {self.ctx.job.queue!r} (it may have been removed)")
            if not earlier.finished:
                raise AISetupError(f"resume={self.p.resume!r}: that job is still {earlier.state.value}; wait for it"
                                   " to end (or cancel it) before continuing its run")
            self.state = BatchState.model_validate(earlier.checkpoint)
        if self.state.identity != ident:
            raise AISetupError(f"resume={self.p.resume!r} was a batch of other items, sections, model or sink: resume"
                               " with the same payload (only cost_limit, concurrency, limits and retries may change)")
        if self.state.fingerprint and self.state.fingerprint != source.fingerprint:
            raise AISetupError("the source file changed since this run started: it cannot be resumed; start a new"
                               " batch for the new file")
        self.state.fingerprint = source.fingerprint
        self.elapsed_base = self.state.elapsed_s
        self._handled_set = set(self.state.handled)

    async def _reckon_budget(self) -> None:
        """Count what a dead attempt of this job left behind: open reservations (calls it may have been billed for)
        and settled calls its last checkpoint missed. A shared budget cannot tell its jobs apart: skipped there."""
        if self.p.budget:
            return
        spend = await self.budget.totals()
        if spend.reserved > EPSILON:
            spend = await self.budget.settle(spend.reserved, spend.reserved)
        counted = self.state.by_job.get(self.ctx.job_id, 0.0)
        if spend.spent - counted > EPSILON:
            self.state.cost_interrupted += spend.spent - counted
            self.state.by_job[self.ctx.job_id] = spend.spent

    # -- the attempt ---------------------------------------------------------------------------------------------
    async def run(self) -> BatchReport:
        source = await asyncio.to_thread(self._open_source)
        await self._load_state(source)
        s = self.state
        s.total = await asyncio.to_thread(source.count)
        self.budget = budget_for(self.ctx, self.p.budget, self.p.cost_limit)
        prepared = make_caller(self.ctx, self.p, self.budget, self.p.concurrency, prefetch=True)
        self.caller = prepared.caller
        self.caller.usage = s.usage.get(self.p.model, ModelUsage()).model_copy()
        self.caller.on_settle = self._changed
        self.job_cost_base = s.by_job.get(self.ctx.job_id, 0.0) - self.caller.usage.cost
        await self._reckon_budget()
        sink = open_sink(self.p.sink, s.jsonl)
        self.saver = Saver(self.ctx, self._snapshot)
        try:
            stored = await sink.open(s.run, self._columns())
            s.jsonl = sink.created
            await self._write_pending(sink, stored)
            await self._loop(source, sink, stored)
            await self._write_pending(sink, set())
        finally:
            try:
                await self.caller.drain()
            finally:
                await self.caller.client.aclose()
                await sink.close()
        await self.saver.flush()
        if self.stop is not None:
            raise self.stop
        await self._progress(done=True)
        if not self.p.budget:  # this job's own: its totals are in the report now
            await self.budget.backend.drop_budget(self.budget.queue, self.budget.key)
        return self._report()

    def _open_source(self) -> ItemSource:
        return ItemSource(self.p.items) if self.p.items is not None else open_source(self.p.source)  # type: ignore[arg-type]

    def _columns(self) -> list[str]:
        return [*self.p.keep, *(s.name for s in self.sections), "model", "tokens_in", "tokens_cached", "tokens_out",
                "cost", "created_at"]

    def _handled(self, index: int) -> bool:
        return index < self.state.below or index in self._handled_set

    def _mark(self, index: int) -> None:
        s = self.state
        self._handled_set.add(index)
        while s.below in self._handled_set:
            self._handled_set.discard(s.below)
            s.below += 1
        s.handled = sorted(self._handled_set)

    async def _loop(self, source: ItemSource, sink: Sink, stored: set[str]) -> None:
        running: set[asyncio.Task[None]] = set()
        self._keys: dict[str, int] = {}
        try:
            async with contextlib.aclosing(self._items(source)) as items:
                async for i, item in items:
                    if self._handled(i):
                        continue
                    key = self._key(item, i)
                    if key in stored:  # in the sink, though no checkpoint said so
                        self._mark(i)
                        continue
                    while len(running) >= self.p.concurrency:
                        _, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    if self.stop is not None or self.stopped is not None or self.ctx.cancelled:
                        break
                    task = asyncio.create_task(self._one(i, key, item, sink))
                    running.add(task)
            if running:
                await asyncio.wait(running)
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.wait(running)

    async def _items(self, source: ItemSource) -> AsyncGenerator[tuple[int, dict[str, Any]], None]:
        """The source's items with their positions, read CHUNK at a time (in a thread for a file), while the batch
        goes on; the source is closed when the caller stops reading."""
        rows = source.rows()
        index = 0
        try:
            while self.stop is None and self.stopped is None and not self.ctx.cancelled:
                chunk = await asyncio.to_thread(_take, rows, CHUNK) if self.p.source else _take(rows, CHUNK)
                if not chunk:
                    return
                for item in chunk:
                    yield index, item
                    index += 1
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    def _key(self, item: dict[str, Any], index: int) -> str:
        if self.p.key is None:
            return str(index)
        if self.p.key not in item:
            raise AISetupError(f"item {index} has no key field {self.p.key!r}: every item needs one (or leave key unset"
                               " to key items by position)")
        key = str(item[self.p.key])
        if key in self._keys:
            raise AISetupError(f"items {self._keys[key]} and {index} have the same key {key!r}: keys ({self.p.key!r})"
                               " must be unique, or leave key unset")
        self._keys[key] = index
        return key

    async def _one(self, index: int, key: str, item: dict[str, Any], sink: Sink) -> None:
        try:
            row = await self._generate(item, key)
        except BudgetExhausted:
            self.stopped = "cost_limit"
            return
        except ItemFailed as failed:
            self._failed(index, key, failed)
        except ProviderRefused as refused:
            self.stop = self.stop or refused
            return
        except Exception as exc:  # noqa: BLE001 - handed to run(), which raises it once every call has ended
            self.stop = self.stop or exc
            return
        else:
            self.state.pending[str(index)] = row
            self.state.ok += 1
        self._mark(index)
        self.done_here += 1
        self._changed()
        try:
            await self._progress()
            if len(self.state.pending) >= self.p.batch_size:
                await self._write_pending(sink, set())
        except Exception as exc:  # noqa: BLE001 - a sink or checkpoint failure: run() raises it once calls have ended
            self.stop = self.stop or exc

    async def _generate(self, item: dict[str, Any], key: str) -> dict[str, Any]:
        row: dict[str, Any] = {"run": self.state.run, "key": key, **{f: item.get(f) for f in self.p.keep}}
        usage = ModelUsage()
        for section in self.sections:
            try:
                messages = section.messages(item)
            except MissingField as exc:
                raise ItemFailed(str(exc), None, section.name) from None
            try:
                got = await self.caller.generate(messages, max_tokens=section.max_tokens,
                                                 response_model=section.model, temperature=section.temperature)
            except ItemFailed as failed:
                raise ItemFailed(str(failed), failed.status, section.name) from None
            row[section.name] = got.data if got.data is not None else got.text
            for f in ("calls", "tokens_in", "tokens_cached", "tokens_out", "cost"):
                setattr(usage, f, getattr(usage, f) + getattr(got.usage, f))
        row.update(model=self.p.model, tokens_in=usage.tokens_in, tokens_cached=usage.tokens_cached,
                   tokens_out=usage.tokens_out, cost=round(usage.cost, 9), created_at=time.time())
        return row

    def _failed(self, index: int, key: str, failed: ItemFailed) -> None:
        s = self.state
        s.failed += 1
        if len(s.errors) < ERRORS_KEPT:
            s.errors.append(ItemError(index=index, key=key, section=failed.section, message=str(failed),
                                      status=failed.status))
        if self.p.on_error == "fail":
            where = f"item {key!r}" + (f", section {failed.section!r}" if failed.section else "")
            self.stop = self.stop or ItemsFailed(f"{where} failed: {failed}. on_error='fail' stops at the first failed"
                                                 " item; results already in the sink stay there")
        elif s.failed > self.p.max_errors:
            self.stop = self.stop or ItemsFailed(f"{s.failed:,} items failed, over max_errors={self.p.max_errors}; the"
                                                 f" last: item {key!r}: {failed}")

    async def _write_pending(self, sink: Sink, stored: set[str]) -> None:
        """Write every pending row the sink does not hold yet, once the checkpoint holding them is stored."""
        async with self.write_lock:
            s = self.state
            if not s.pending:
                return
            await self.saver.flush()
            batch = dict(s.pending)
            rows = [row for row in batch.values() if row["key"] not in stored]
            if rows:
                await sink.write(rows)
            for i in batch:
                s.pending.pop(i, None)
            self._changed()

    # -- checkpoint, progress, report ----------------------------------------------------------------------------
    def _changed(self) -> None:
        self.state.seq += 1
        saver = getattr(self, "saver", None)
        if saver is not None:
            saver.poke()

    def _snapshot(self) -> dict[str, Any]:
        s = self.state
        s.usage[self.p.model] = self.caller.usage.model_copy()
        s.by_job[self.ctx.job_id] = self.job_cost_base + self.caller.usage.cost
        s.elapsed_s = self.elapsed_base + time.monotonic() - self.started
        return s.model_dump(mode="json")

    def _cost(self) -> float:
        """All the run has spent: its calls (one model: the identity holds it), and what dead attempts left open."""
        return self.caller.usage.cost + self.state.cost_interrupted

    async def _progress(self, done: bool = False) -> None:
        s = self.state
        handled = s.below + len(self._handled_set)
        total = max(s.total, handled)
        secs = time.monotonic() - self.started
        rate = self.done_here / secs if secs > 0 else 0.0
        eta = (total - handled) / rate if rate > 0 and not done else None
        cost = self._cost()
        percent = 100.0 if done else (min(99.9, 100.0 * handled / total) if total else 0.0)
        limit = "" if self.p.cost_limit is None else f" of ${self.p.cost_limit:,.2f}"
        message = f"{handled:,} of {total:,} items · ${cost:,.4f}{limit}"
        if eta:
            message += f" · ETA {eta:,.0f}s"
        u = self.caller.usage
        await self.ctx.progress(percent, message, items_done=handled, items_total=total, items_failed=s.failed,
                                tokens_in=u.tokens_in, tokens_out=u.tokens_out, cost=round(cost, 6),
                                cost_limit=self.p.cost_limit, requests_per_min=len(self.caller.recent),
                                eta_s=None if eta is None else round(eta, 1))

    def _report(self) -> BatchReport:
        s = self.state
        handled = s.below + len(self._handled_set)
        left = max(0, s.total - handled)
        hint = None
        if self.stopped == "cost_limit":
            hint = (f"the cost limit stopped the batch with {left:,} items left: enqueue the same payload with a"
                    f" higher cost_limit and resume={self.ctx.job_id!r} to go on from here")
        usage = {self.p.model: self.caller.usage}
        return BatchReport(
            run=s.run, sink=self.p.sink, items_total=s.total, items_ok=s.ok, items_failed=s.failed, items_left=left,
            calls=sum(u.calls for u in usage.values()), tokens_in=sum(u.tokens_in for u in usage.values()),
            tokens_cached=sum(u.tokens_cached for u in usage.values()),
            tokens_out=sum(u.tokens_out for u in usage.values()), cost=round(self._cost(), 9),
            cost_limit=self.p.cost_limit, cost_interrupted=round(s.cost_interrupted, 9), cost_by_model=usage,
            stopped="cost_limit" if self.stopped else None, resume_hint=hint,
            duration_s=round(self.elapsed_base + time.monotonic() - self.started, 3), attempts=self.ctx.attempt,
            errors=s.errors)


def _take(rows: Iterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        out.append(row)
        if len(out) >= n:
            break
    return out
