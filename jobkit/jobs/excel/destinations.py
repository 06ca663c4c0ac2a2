"""Where imported rows go, named by URL: kinds (URL schemes) and Python functions the worker's code registered.

A destination receives validated batches. To make a resumed import exactly-once, it stores the `state`
it is handed in the same transaction as the batch, and returns the last one from `open`.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from ...config import mask_url
from .._registry import Registry, shorten
from .errors import ImportSetupError

__all__ = [
    "Destination", "DestinationFactory", "PythonDestination", "open_destination", "register_destination",
    "register_python_destination",
]


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
BatchFunction = Callable[[list[Any]], Any]
F = TypeVar("F", bound=BatchFunction)
_kinds: dict[str, DestinationFactory] = {}
_functions: Registry[BatchFunction] = Registry(
    "python destination", "jobkit.jobs.register_python_destination(function)", ImportSetupError)


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
        raise ImportSetupError(f"unknown destination {shorten(mask_url(url))!r}; known kinds: {known} (add one"
                               " with jobkit.jobs.register_destination)")
    return factory(url)


def register_python_destination(fn: F, name: str | None = None) -> F:
    """Make `destination="python:name"` (default: the function's name) call `fn` with each batch; a decorator."""
    if not callable(fn):
        raise TypeError(f"register_python_destination needs a function that takes a list of rows, not {fn!r}")
    _functions.add(fn, name)
    return fn


class PythonDestination(Destination):
    """`python:name`: a function registered with `register_python_destination` (async or not) receives each batch
    as a list of models. The name is looked up, never imported.

    Delivery is at least once: a worker killed after the call but before the checkpoint repeats that
    batch on resume. Register a destination that keeps `state` for exactly once.
    """

    def __init__(self, url: str) -> None:
        ref = url.split(":", 1)[1]
        if not ref:
            raise ImportSetupError("write a Python destination as 'python:name', the name of a function registered"
                                   " with jobkit.jobs.register_python_destination")
        self.fn: BatchFunction = _functions.get(ref)

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


def _table(url: str) -> Destination:
    from .table_destination import TableDestination

    return TableDestination(url)


register_destination("python", PythonDestination)
register_destination("sqlite", _sqlite)
register_destination("postgresql", _table)
register_destination("postgres", _table)
