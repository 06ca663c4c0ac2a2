"""`mode="batch_api"`: the same batch through the provider's Batch API. Items become JSONL request lines (one per
item and section), uploaded as a file, made into a batch, polled, then read back into the same rows, sink and
checkpoint as live calls.

Exactly once, as in live mode, plus: a batch's worst case is reserved before it is uploaded, and the batch is
checkpointed as soon as it exists (file id, then batch id), so a retried or resumed job polls the same batch and
never uploads or pays for it twice. Its results are checkpointed before its reservation is settled to what every
line of its files says was used.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from .batch import CHUNK, EPSILON, BatchRun, _Section, _take
from .batch_client import BatchClient
from .batch_files import Outcome, RequestFile, ResultIndex, custom_id, outcome, request_line
from .calls import BudgetExhausted, ItemFailed, PromptEstimate
from .errors import AISetupError, BatchRefused, ProviderRefused
from .models import BatchReport, ModelUsage, ProviderBatch
from .outputs import Invalid, parse_answer, reask_message, response_format
from .prices import batch_pricer
from .providers import get_provider
from .sinks import Sink
from .sources import ItemSource

__all__ = ["BatchAPIRun", "FIRST_POLL"]

FIRST_POLL = 1.0  # seconds before the first poll (or poll_interval if shorter); the wait doubles up to poll_interval
ENDED = ("completed", "expired", "cancelled", "failed")


class BatchAPIRun(BatchRun):
    """One attempt in Batch API mode: collect the batches earlier attempts made, submit the rest, poll, collect."""

    async def _reckon_budget(self) -> None:
        """Open batches keep their reservations (the provider still runs them); any other reservation a dead attempt
        left open is settled at its worst case and counted, as in live mode."""
        if self.p.budget:
            return
        spend = await self.budget.totals()
        orphan = spend.reserved - sum(b.reserved for b in self.state.batches)
        if orphan > EPSILON:
            spend = await self.budget.settle(orphan, orphan)
        counted = self.state.by_job.get(self.ctx.job_id, 0.0)
        if spend.spent - counted > EPSILON:
            self.state.cost_interrupted += spend.spent - counted
            self.state.by_job[self.ctx.job_id] = spend.spent

    async def _loop(self, source: ItemSource, sink: Sink, stored: set[str]) -> None:
        s = self.state
        provider = get_provider(self.p.provider)
        self.price_batch = batch_pricer(provider, self.p.model)
        self.estimate = PromptEstimate()
        self.reasker = dataclasses.replace(self.caller, max_reasks=max(0, self.p.max_reasks - 1))
        self.seen: dict[str, dict[str, Any]] = {}  # batch id -> the provider's last word on it
        self.api = BatchClient(provider, self.p.retry, self.p.request_timeout)
        if s.cursor_job != self.ctx.job_id:  # a new job resuming the run: look at every item again
            s.cursor, s.cursor_job = 0, self.ctx.job_id
        try:
            with tempfile.TemporaryDirectory(prefix="jobkit-batch-") as tmp:
                self.tmp = Path(tmp)
                await self._adopt()
                await self._submit(source, stored)
                await self._await_batches(source, sink, stored)
        finally:
            await self.api.aclose()

    # -- submitting ----------------------------------------------------------------------------------------------
    async def _adopt(self) -> None:
        """Batches an earlier attempt uploaded but did not see created: the provider's, if it made one; else none
        was made, and its items are submitted again."""
        s = self.state
        for rec in [b for b in s.batches if not b.batch_id]:
            found = await self.api.find(rec.file_id) if rec.file_id else None
            if found is not None and isinstance(found.get("id"), str):
                rec.batch_id = found["id"]
                self._changed()
                await self.saver.flush()
                continue
            s.batches.remove(rec)
            s.cursor = min(s.cursor, rec.start)
            self._changed()
            await self.saver.flush()
            await self.budget.settle(rec.reserved, 0.0)

    async def _submit(self, source: ItemSource, stored: set[str]) -> None:
        self._keys: dict[str, int] = {}
        n = 0
        batch: RequestFile | None = None
        room = math.inf
        try:
            async with contextlib.aclosing(self._items(source)) as items:
                async for i, item in items:
                    key = self._to_send(i, item, stored)
                    if key is None:
                        continue
                    lines, worst = self._requests(i, key, item)
                    if not lines:
                        continue
                    if batch is not None and not batch.fits(lines):
                        await self._send(batch)
                        batch = None
                        if self.stop is not None or self.stopped is not None:
                            break
                    if batch is None:
                        n += 1
                        batch = RequestFile(self.tmp / f"requests-{n}.jsonl")
                        room = await self._room()
                    if batch.worst + worst > room:
                        self.stopped = "cost_limit"
                        break
                    batch.add(i, lines, worst)
            if batch is not None and batch.items:
                await self._send(batch)
        finally:
            if batch is not None:
                batch.close()

    def _to_send(self, index: int, item: dict[str, Any], stored: set[str]) -> str | None:
        """The item's key if it is to be sent: not handled, not in the sink, not in a batch of this job."""
        s = self.state
        if index < s.cursor or self._handled(index) or any(b.start <= index < b.end for b in s.batches):
            return None
        key = self._key(item, index)
        if key in stored:
            self._mark(index)
            return None
        return key

    def _requests(self, index: int, key: str, item: dict[str, Any]) -> tuple[list[bytes], float]:
        """An item's request lines (one a section) and their worst-case cost at the batch price; none if it fails."""
        lines, worst = [], 0.0
        for section in self.sections:
            try:
                messages = section.messages(item)
            except Exception as exc:  # noqa: BLE001 - MissingField, or a template that failed on this item
                self._failed(index, key, ItemFailed(str(exc), None, section.name))
                self._mark(index)
                self._changed()
                return [], 0.0
            lines.append(request_line(custom_id(key, section.name), self._body(section, messages)))
            worst += self.price_batch(self.estimate.tokens(messages), 0, section.max_tokens)
        return lines, worst

    def _body(self, section: _Section, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The request a live call would send."""
        body: dict[str, Any] = {"model": self.p.model, "max_tokens": section.max_tokens}
        temperature = self.p.temperature if section.temperature is None else section.temperature
        if temperature is not None:
            body["temperature"] = temperature
        if section.model is not None:
            body["response_format"] = response_format(section.model)
        body["messages"] = messages
        return body

    async def _room(self) -> float:
        if self.budget.limit is None:
            return math.inf
        spend = await self.budget.totals()
        return self.budget.limit - spend.spent - spend.reserved

    async def _send(self, batch: RequestFile) -> None:
        """Reserve the file's worst case (cut back to what fits), checkpoint, upload, create, checkpoint."""
        s = self.state
        try:
            while True:
                granted, spend = await self.budget.reserve(batch.worst)
                if granted:
                    break
                assert self.budget.limit is not None
                self.stopped = "cost_limit"  # another job of a shared budget took some room meanwhile
                fit = batch.fitting(self.budget.limit - spend.spent - spend.reserved)
                if fit == 0:
                    return
                batch.keep(fit)
        finally:
            batch.close()
        rec = ProviderBatch(start=batch.items[0].position, end=batch.items[-1].position + 1, requests=batch.requests,
                            reserved=batch.worst)
        s.batches.append(rec)
        s.cursor = max(s.cursor, rec.end)
        self._changed()
        await self.saver.flush()
        try:
            rec.file_id = await self.api.upload(batch.path)
            self._changed()
            await self.saver.flush()
            created = await self.api.create(rec.file_id)
        except BatchRefused as refused:
            s.batches.remove(rec)
            self._changed()
            await self.saver.flush()
            await self.budget.settle(rec.reserved, 0.0)
            self.stop = self.stop or refused
            return
        if not isinstance(created.get("id"), str) or not created["id"]:
            raise AISetupError(f"the provider created a batch without an id: {str(created)[:200]}")
        rec.batch_id = created["id"]
        self.seen[rec.batch_id] = created
        self._changed()
        await self.saver.flush()
        await self._progress()

    # -- polling and collecting ----------------------------------------------------------------------------------
    async def _await_batches(self, source: ItemSource, sink: Sink, stored: set[str]) -> None:
        s = self.state
        delay = min(FIRST_POLL, self.p.poll_interval)
        cancelling = False
        while s.batches:
            if (self.ctx.cancelled or self.stop is not None) and not cancelling:
                cancelling = True
                for rec in s.batches:
                    with contextlib.suppress(BatchRefused):  # it ended meanwhile
                        self.seen[rec.batch_id] = await self.api.cancel(rec.batch_id)
            for rec in list(s.batches):
                info = self.seen[rec.batch_id] = await self.api.get(rec.batch_id)
                if info.get("status") in ENDED:
                    await self._collect(rec, info, source, sink, stored)
            await self._progress()
            if not s.batches:
                break
            if self.ctx.cancelled:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.ctx.wait_cancelled(), delay)
            delay = min(delay * 2, self.p.poll_interval)

    async def _collect(self, rec: ProviderBatch, info: dict[str, Any], source: ItemSource, sink: Sink,
                       stored: set[str]) -> None:
        """Read an ended batch's files into rows (written batch_size at a time), then settle its reservation."""
        s = self.state
        index = ResultIndex(self.price_batch)
        for n, name in enumerate(("output_file_id", "error_file_id")):
            file_id = info.get(name)
            if isinstance(file_id, str) and file_id:
                path = self.tmp / f"result-{len(s.batches)}-{n}.jsonl"
                await self.api.download(file_id, path)
                await asyncio.to_thread(index.add, path)
        for why in index.stray:
            self.ctx.log.warning("batch %s: %s (ignored)", rec.batch_id, why)
        if not rec.counted:  # what every line used, once, even if a crash makes a later attempt read it again
            u = self.caller.usage
            u.calls += index.calls
            u.tokens_in += index.tokens_in
            u.tokens_cached += index.tokens_cached
            u.tokens_out += index.tokens_out
            u.cost += index.cost
            rec.counted = True
            self._changed()
        status = info.get("status")
        refused = _errors(info) if status == "failed" else None
        await self._walk(rec, source, sink, stored, index, status in ("expired", "cancelled"), refused)
        s.batches.remove(rec)
        self._changed()
        await self._write_pending(sink, set())
        await self.saver.flush()
        await self.budget.settle(rec.reserved, index.cost)

    async def _walk(self, rec: ProviderBatch, source: ItemSource, sink: Sink, stored: set[str], index: ResultIndex,
                    ended_early: bool, refused: str | None) -> None:
        rows = source.rows()
        i = 0
        try:
            while i < rec.end:
                chunk = await asyncio.to_thread(_take, rows, CHUNK) if self.p.source else _take(rows, CHUNK)
                if not chunk:
                    break
                for item in chunk:
                    i += 1
                    at = i - 1
                    if at < rec.start or at >= rec.end or self._handled(at):
                        continue
                    key = self._item_key(item, at)
                    if key in stored:
                        self._mark(at)
                        continue
                    await self._item(at, key, item, index, ended_early, refused)
                    if len(self.state.pending) >= self.p.batch_size:
                        await self._write_pending(sink, set())
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    def _item_key(self, item: dict[str, Any], index: int) -> str:
        return str(index) if self.p.key is None else str(item[self.p.key])

    async def _item(self, index: int, key: str, item: dict[str, Any], results: ResultIndex, ended_early: bool,
                    refused: str | None) -> None:
        """One item's row from its sections' lines; an item a batch did not run stays unhandled (a resume sends it)."""
        s = self.state
        row: dict[str, Any] = {"run": s.run, "key": key, **{f: item.get(f) for f in self.p.keep}}
        usage = ModelUsage()
        for section in self.sections:
            if refused is not None:
                got = Outcome(error=f"the provider refused the batch: {refused}")
            else:
                got = outcome(results.line(custom_id(key, section.name)), ended_early)
            if got.left:
                self.stopped = self.stopped or "batch_ended"
                return
            if got.answer is None:
                self._fail(index, key, ItemFailed(got.error, got.status, section.name))
                return
            a = got.answer
            usage.calls += 1
            usage.tokens_in += a.tokens_in
            usage.tokens_cached += a.tokens_cached
            usage.tokens_out += a.tokens_out
            usage.cost += self.price_batch(a.tokens_in, a.tokens_cached, a.tokens_out)
            try:
                row[section.name] = _value(a.content, parse_answer(a.content, section.model))
            except Invalid as bad:
                answer = await self._reask(index, key, item, section, a.content, bad, usage)
                if answer is None:
                    return
                row[section.name] = answer
        row.update(model=self.p.model, tokens_in=usage.tokens_in, tokens_cached=usage.tokens_cached,
                   tokens_out=usage.tokens_out, cost=round(usage.cost, 9), created_at=time.time())
        s.pending[str(index)] = row
        s.ok += 1
        self._mark(index)
        self.done_here += 1
        self._changed()

    async def _reask(self, index: int, key: str, item: dict[str, Any], section: _Section, content: str,
                     bad: Invalid, usage: ModelUsage) -> Any:
        """A batch answer that does not validate is re-asked live (a new batch would take hours for a few items):
        the conversation with the bad answer and what was wrong, up to max_reasks times, at the live price."""
        assert section.model is not None
        if self.p.max_reasks == 0:
            self._fail(index, key, ItemFailed(f"the answer did not match {section.model.__name__} (max_reasks=0):"
                                              f" {bad.problems}", 200, section.name))
            return None
        messages = [*section.messages(item), {"role": "assistant", "content": content},
                    {"role": "user", "content": reask_message(bad.problems, section.model)}]
        try:
            got = await self.reasker.generate(messages, max_tokens=section.max_tokens, response_model=section.model,
                                              temperature=section.temperature)
        except BudgetExhausted:
            self.stopped = self.stopped or "cost_limit"
            return None
        except ItemFailed as failed:
            self._fail(index, key, ItemFailed(f"after the batch's answer: {failed}", failed.status, section.name))
            return None
        except ProviderRefused as refused:
            self.stop = self.stop or refused
            return None
        for f in ("calls", "tokens_in", "tokens_cached", "tokens_out", "cost"):
            setattr(usage, f, getattr(usage, f) + getattr(got.usage, f))
        return _value(got.text, got.data)

    def _fail(self, index: int, key: str, failed: ItemFailed) -> None:
        self._failed(index, key, failed)
        self._mark(index)
        self.done_here += 1
        self._changed()

    # -- progress and report -------------------------------------------------------------------------------------
    async def _progress(self, done: bool = False) -> None:
        s = self.state
        handled = s.below + len(self._handled_set)
        total = max(s.total, handled)
        open_ = [self.seen.get(b.batch_id, {}) for b in s.batches]
        counts: list[dict[str, Any]] = [c if isinstance(c := b.get("request_counts"), dict) else {} for b in open_]
        completed, failed, requests = (sum(_int(c.get(f)) for c in counts) for f in ("completed", "failed", "total"))
        status = ", ".join(sorted({str(b.get("status", "submitting")) for b in open_})) or ("done" if done else "")
        cost, reserved = self._cost(), sum(b.reserved for b in s.batches)
        percent = 100.0 if done else (min(99.9, 100.0 * handled / total) if total else 0.0)
        limit = "" if self.p.cost_limit is None else f" of ${self.p.cost_limit:,.2f}"
        message = f"{handled:,} of {total:,} items · ${cost:,.4f}{limit}"
        if s.batches:
            message += f" · batch {status}: {completed + failed:,} of {requests:,} requests"
        u = self.caller.usage
        await self.ctx.progress(percent, message, items_done=handled, items_total=total, items_failed=s.failed,
                                batch_status=status, batches_open=len(s.batches), requests_completed=completed,
                                requests_failed=failed, requests_total=requests, tokens_in=u.tokens_in,
                                tokens_out=u.tokens_out, cost=round(cost, 6), cost_reserved=round(reserved, 6),
                                cost_limit=self.p.cost_limit)

    def _report(self) -> BatchReport:
        report = super()._report()
        if self.stopped == "batch_ended":
            report.stopped = "batch_ended"
            report.resume_hint = (f"a provider batch expired or was cancelled with {report.items_left:,} items not run:"
                                  f" enqueue the same payload with resume={self.ctx.job_id!r} to submit them again")
        return report


def _value(text: str, data: dict[str, Any] | None) -> Any:
    return data if data is not None else text


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _errors(info: dict[str, Any]) -> str:
    errors = info.get("errors")
    data = errors.get("data") if isinstance(errors, dict) else None
    said = [f"{e.get('message')}" + (f" (line {e['line']})" if e.get("line") else "")
            for e in (data if isinstance(data, list) else []) if isinstance(e, dict)]
    return "; ".join(said[:5])[:500] or "no reason given"
