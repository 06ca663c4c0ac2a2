"""Names a payload may use, bound by the worker's own code: a payload picks among them and never imports anything.

A job's payload comes from whoever can enqueue. It can name a row model, a sink or a destination, but only
one that code running in the worker registered; an import path in a payload is looked up, not imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from .. import ConfigError

__all__ = ["Registry", "not_registered", "shorten"]

T = TypeVar("T")
LISTED = 20  # names quoted in a refusal; the rest are counted


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, for quoting payload strings in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Registry(Generic[T]):
    """Objects by the names a payload may use: the given name (default `obj.__name__`) and its import path.

    `kind` names the things ("row model"), `how` is the call that registers one, and `error` the exception
    raised for a name nobody registered (a job passes its own `Unrecoverable` type).
    """

    def __init__(self, kind: str, how: str, error: type[Exception]) -> None:
        self.kind, self.how, self.error = kind, how, error
        self._by_name: dict[str, T] = {}
        self._by_path: dict[str, T] = {}

    def add(self, obj: T, name: str | None = None) -> T:
        """Register `obj` under `name` and under `module:qualname` (and `module.qualname`).

        The same object defined again (a re-run notebook cell, a reloaded module) replaces its earlier self;
        another object under a name already taken is refused, since a payload could no longer tell them apart.
        """
        key = name or getattr(obj, "__name__", None)
        if not isinstance(key, str) or not key:
            raise ConfigError(f"give {obj!r} a name to register it as a {self.kind}")
        known = self._by_name.get(key)
        if known is not None and _origin(known) != _origin(obj):
            raise ConfigError(f"{self.kind} name {key!r} is already taken by {_origin(known)}; register"
                              f" {_origin(obj)} under a name of its own (the second argument of the call)")
        self._by_name[key] = obj
        module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
        if module and qualname:
            self._by_path[f"{module}:{qualname}"] = self._by_path[f"{module}.{qualname}"] = obj
        return obj

    def get(self, ref: str) -> T:
        """The object registered as `ref`; else `error`, saying what is registered and how to register more."""
        found = self._by_name.get(ref)
        if found is None:
            found = self._by_path.get(ref)
        if found is None:
            raise not_registered(self.kind, ref, self._by_name, self.how, self.error)
        return found

    def names(self) -> list[str]:
        return sorted(self._by_name)


def not_registered(kind: str, ref: str, registered: Iterable[str], how: str, error: type[Exception]) -> Exception:
    """The refusal of a payload naming a `kind` nobody registered: what is registered, and the call (`how`) that
    registers one, in a module the worker imports."""
    names = sorted(registered)
    more = len(names) - LISTED
    listing = ", ".join(names[:LISTED]) + (f" and {more} more" if more > 0 else "") if names else "none"
    return error(f"{kind} {shorten(ref)!r} is not registered (registered: {listing}). A payload can only name what"
                 f" the worker's code registered: call {how} in a module the worker imports")

def _origin(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
