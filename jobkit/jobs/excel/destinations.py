"""Where imported rows go, named by URL, and the registry that lets users add their own kinds.

A destination receives validated batches. To make a resumed import exactly-once, it stores the `state`
it is handed in the same transaction as the batch, and returns the last one from `open`.
"""

from __future__ import annotations

import abc
import asyncio
import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from .errors import ImportSetupError

__all__ = ["Destination", "DestinationFactory", "PythonDestination", "open_destination", "register_destination"]


class Destination(abc.ABC):
    """Receives each validated batch of row models; built from its URL by a registered factory."""

    async def open(self, model: type[BaseModel], job_id: str) -> dict[str, Any] | None:
        """Prepare for `model`'s rows (create tables...); return the state last committed for `job_id`, if kept."""
        return None

    @abc.abstractmethod
    async def write(self, rows: Sequence[BaseModel], state: dict[str, Any]) -> None:
        """Store one batch; if possible keep `state` with it, atomically, for `open` to return after a crash."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once, whether the import succeeded or not."""


DestinationFactory = Callable[[str], Destination]
_kinds: dict[str, DestinationFactory] = {}


def register_destination(scheme: str, factory: DestinationFactory) -> None:
    """Make URLs `scheme:...` open `factory(url)`; e.g. register_destination("postgres", PostgresDestination)."""
    if not scheme.isidentifier():
        raise ValueError(f"a destination scheme is a plain word like 'postgres', not {scheme!r}")
    _kinds[scheme.lower()] = factory


def open_destination(url: str) -> Destination:
    """The destination for `url`, by its scheme (the part before the first ':')."""
    scheme = url.split(":", 1)[0].lower()
    factory = _kinds.get(scheme)
    if factory is None:
        known = ", ".join(f"'{k}:...'" for k in sorted(_kinds))
        raise ImportSetupError(f"unknown destination {url!r}; known kinds: {known} (add one with"
                               " jobkit.jobs.register_destination)")
    return factory(url)


class PythonDestination(Destination):
    """`python:package.module:function`: your callable (async or not) receives each batch as a list of models.

    Delivery is at least once: a worker killed after the call but before the checkpoint repeats that
    batch on resume. Register a destination that keeps `state` for exactly once.
    """

    def __init__(self, url: str) -> None:
        ref = url.split(":", 1)[1]
        module_name, _, attr = ref.partition(":")
        if not module_name or not attr:
            raise ImportSetupError(f"write a Python destination as 'python:package.module:function', not {url!r}")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ImportSetupError(f"cannot load destination {url!r}: {exc}; is it importable by the worker?") from None
        if not callable(obj):
            raise ImportSetupError(f"destination {url!r} is {obj!r}, which cannot be called")
        self.fn: Callable[[list[BaseModel]], Any] = obj

    async def write(self, rows: Sequence[BaseModel], state: dict[str, Any]) -> None:
        if inspect.iscoroutinefunction(self.fn):
            await self.fn(list(rows))
            return
        result = await asyncio.to_thread(self.fn, list(rows))
        if inspect.isawaitable(result):
            await result


def _sqlite(url: str) -> Destination:
    from .sqlite_destination import SQLiteDestination

    return SQLiteDestination(url)


register_destination("python", PythonDestination)
register_destination("sqlite", _sqlite)
