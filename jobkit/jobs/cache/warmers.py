"""Warmers: the async functions the worker's code registered to compute a cache key's value, each bound to the key
prefix it owns, so a payload can only have keys under that prefix computed and written."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ... import ConfigError
from .._registry import Registry
from .errors import CacheWarmSetupError

__all__ = ["KeySource", "Warmer", "register_cache_warmer", "resolve_warmer"]

Compute = Callable[[str], Awaitable[Any]]
KeySource = Callable[[str], AsyncIterable[str] | Iterable[str] | Awaitable[Iterable[str]]]
F = TypeVar("F", bound=Compute)


@dataclass(frozen=True)
class Warmer:
    """A registered warmer: `compute(key)`, the prefix its keys carry, and optionally its own key lister."""

    compute: Compute
    prefix: str
    keys: KeySource | None
    __name__: str
    __module__: str
    __qualname__: str


_warmers: Registry[Warmer] = Registry("cache warmer", "jobkit.jobs.register_cache_warmer(function, prefix=...)",
                                      CacheWarmSetupError)


def register_cache_warmer(fn: F | None = None, /, *, prefix: str, name: str | None = None,
                          keys: KeySource | None = None) -> Any:
    """Let payloads warm keys starting with `prefix` by `await fn(key)`; usable as `@register_cache_warmer(prefix=...)`.

    `keys(pattern)` (optional) lists the keys a pattern covers (an iterable, an async iterable, or a coroutine
    returning a list): without it, patterns match the keys the cache already holds. `prefix` is required:
    payloads come from whoever can enqueue, and must not overwrite keys outside it (`prefix=""` allows any key).
    """
    if not isinstance(prefix, str):
        raise ConfigError("register_cache_warmer needs prefix='...': the keys this warmer owns")

    def add(f: F) -> F:
        is_async = inspect.iscoroutinefunction(f)  # (kept apart: mypy would narrow `f` past its TypeVar)
        if not is_async:
            raise ConfigError(f"a cache warmer is an async function of one key, not {f!r}")
        label = name or f.__name__
        _warmers.add(Warmer(f, prefix, keys, label, f.__module__, f.__qualname__), label)
        return f

    return add(fn) if fn is not None else add


def resolve_warmer(ref: str) -> Warmer:
    return _warmers.get(ref)
