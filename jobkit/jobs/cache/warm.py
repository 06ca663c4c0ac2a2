"""One attempt of a cache warm: expand the keys, then batch by batch skip the fresh ones, compute the rest
(`concurrency` at a time) and write them with their time to live.

Keys are handled in sorted order and the checkpoint keeps the last key of each written batch, so a retry goes
on after it: values already computed are not computed again, even with `force`.
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import inspect
import json
import time
from collections.abc import AsyncIterable, Iterable
from typing import Any

from ... import Context, Unrecoverable
from .._registry import shorten
from .errors import CacheWarmSetupError
from .models import ERRORS_KEPT, CacheWarm, CacheWarmReport, WarmError, WarmState
from .sinks import CacheSink, open_cache
from .warmers import Warmer, resolve_warmer

__all__ = ["Warm"]


def encode(value: Any) -> bytes:
    """A computed value as the cache stores it: bytes as they are, text as UTF-8, anything else as compact JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class Warm:
    """Runs one attempt; `run()` returns the report, or raises."""

    def __init__(self, ctx: Context, payload: CacheWarm) -> None:
        self.ctx, self.p = ctx, payload
        self.warmer: Warmer = resolve_warmer(payload.warmer)
        self.state = WarmState.model_validate(ctx.checkpoint) if ctx.checkpoint else WarmState()
        self.started = time.monotonic()
        self.base_elapsed = self.state.elapsed_s
        self.fresh_for = payload.ttl / 2 if payload.fresh_for is None else payload.fresh_for
        for text in [*payload.keys, *payload.patterns]:
            if not text.startswith(self.warmer.prefix):
                raise CacheWarmSetupError(f"{shorten(text)!r} is not under {self.warmer.prefix!r}, the prefix of"
                                          f" warmer {payload.warmer!r}: a payload may only warm the keys its warmer"
                                          " owns")
        self.total = 0

    async def run(self) -> CacheWarmReport:
        sink = open_cache(self.p.cache)
        try:
            await self.ctx.progress(0, "listing keys")
            keys = await self._keys(sink)
            self.total = len(keys)
            start = bisect.bisect_right(keys, self.state.last_key) if self.state.last_key is not None else 0
            for i in range(start, len(keys), self.p.batch_size):
                if self.ctx.cancelled:
                    break
                await self._batch(sink, keys[i:i + self.p.batch_size])
        finally:
            await sink.close()
        await self._progress(done=True)
        return self._report()

    async def _keys(self, sink: CacheSink) -> list[str]:
        found = set(self.p.keys)
        for pattern in self.p.patterns:
            source = self.warmer.keys(pattern) if self.warmer.keys is not None else sink.scan(pattern)
            async for key in _iterate(source):
                if key.startswith(self.warmer.prefix) and fnmatch.fnmatchcase(key, pattern):
                    found.add(key)
                    if len(found) > self.p.max_keys:
                        raise CacheWarmSetupError(f"the keys and patterns cover more than max_keys={self.p.max_keys:,}"
                                                  " keys: narrow the patterns, or raise max_keys")
        return sorted(found)

    async def _batch(self, sink: CacheSink, keys: list[str]) -> None:
        ttls = await sink.ttls(keys)
        due = [k for k, left in zip(keys, ttls, strict=True) if self.p.force or left is None or left < self.fresh_for]
        limit = asyncio.Semaphore(self.p.concurrency)

        async def value(key: str) -> bytes | Exception:
            async with limit:
                try:
                    return encode(await self.warmer.compute(key))
                except Exception as exc:  # noqa: BLE001 - a key's failure is handled by the policy below
                    return exc

        values = await asyncio.gather(*(value(k) for k in due))
        items = [(k, v, self.p.ttl) for k, v in zip(due, values, strict=True) if isinstance(v, bytes)]
        errors = [(k, v) for k, v in zip(due, values, strict=True) if isinstance(v, Exception)]
        if items:
            await sink.write(items)  # computed values are kept even when the batch fails: a retry finds them fresh
        if errors and self.p.on_error == "fail":
            key, exc = errors[0]
            if isinstance(exc, Unrecoverable):
                raise exc
            raise RuntimeError(f"computing {shorten(key)!r} failed ({type(exc).__name__}: {exc}); {len(errors)} of"
                               f" {len(due)} keys of the batch failed, the others were written") from exc
        failed = [WarmError(key=k, error=f"{type(v).__name__}: {v}"[:500]) for k, v in errors]
        s = self.state.model_copy(deep=True)
        s.last_key, s.done = keys[-1], s.done + len(keys)
        s.written += len(items)
        s.fresh += len(keys) - len(due)
        s.failed += len(failed)
        s.batches += 1
        s.errors.extend(failed[: ERRORS_KEPT - len(s.errors)])
        s.elapsed_s = self.base_elapsed + time.monotonic() - self.started
        self.state = s
        await self.ctx.save_checkpoint(s.model_dump(mode="json"))
        await self._progress(batch_written=len(items), batch_fresh=len(keys) - len(due))

    async def _progress(self, done: bool = False, batch_written: int = 0, batch_fresh: int = 0) -> None:
        s = self.state
        percent = 100.0 if done else min(99.9, 100.0 * s.done / self.total) if self.total else 0.0
        message = f"{s.done:,} of {self.total:,} keys · {s.written:,} written, {s.fresh:,} fresh" + (
            f", {s.failed:,} failed" if s.failed else "")
        await self.ctx.progress(percent, message, keys_done=s.done, keys_total=self.total, written=s.written,
                                fresh=s.fresh, failed=s.failed, batch=s.batches, batch_written=batch_written,
                                batch_fresh=batch_fresh)

    def _report(self) -> CacheWarmReport:
        s = self.state
        return CacheWarmReport(warmer=self.p.warmer, cache=self.p.cache, keys=self.total, written=s.written,
                               fresh=s.fresh, failed=s.failed, batches=s.batches, errors=s.errors,
                               duration_s=round(self.base_elapsed + time.monotonic() - self.started, 3),
                               attempts=self.ctx.attempt)


async def _iterate(source: Any) -> AsyncIterable[str]:
    """Keys from a key lister's result: an async iterable, an iterable, or a coroutine returning an iterable."""
    if inspect.isawaitable(source):
        source = await source
    if isinstance(source, AsyncIterable):
        async for key in source:
            yield str(key)
    elif isinstance(source, Iterable):
        for key in source:
            yield str(key)
    else:
        raise CacheWarmSetupError(f"a warmer's keys() returned {type(source).__name__}, not keys")
