"""`@jobkit.task`: a typed async function plus its default job options, registered by name."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, TypeVar, overload

from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, ValidationError

from .cron import timing
from .errors import ConfigError, PayloadError, TaskNotFound
from .models import Backoff, JobOptions, Retention, dump_json, invalid

if typing.TYPE_CHECKING:
    from .context import Context

__all__ = ["Task", "TaskSchedule", "lookup", "registered", "task"]

R = TypeVar("R")
TaskFn = Callable[..., Awaitable[Any]]

_registry: dict[str, Task[Any]] = {}
_JSON_SCALARS = frozenset({str, int, bool, type(None)})  # what JSON stores exactly (not float: NaN, inf)


@dataclass(frozen=True)
class TaskSchedule:
    """`@task(cron=...)` or `@task(every=...)`: the schedule every worker serving the task declares at start."""

    cron: str | None
    every: float | None  # seconds
    tz: str
    catch_up: int = 0
    overlap: Literal["skip", "queue", "allow"] = "skip"


class Task(Generic[R]):
    """A registered job function: its name, queue, payload type and default options."""

    def __init__(self, fn: Callable[..., Awaitable[R]], *, name: str, queue: str, options: JobOptions,
                 schedule: TaskSchedule | None = None, concurrency: int | None = None) -> None:
        """`concurrency`: at most that many of this task's jobs run at once in one worker, whatever its own."""
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"task {name!r} must be an async function: write `async def {fn.__name__}(ctx, payload)`")
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                        or concurrency < 1):
            raise ConfigError(f"task {name!r}: concurrency must be a whole number of at least 1 (or None for no"
                              f" limit of its own), not {concurrency!r}")
        self.concurrency = concurrency
        self.fn = fn
        self.name = name
        self.queue = queue
        self.options = options
        self.schedule = schedule
        params = list(inspect.signature(fn).parameters.values())
        if not 1 <= len(params) <= 2:
            raise ConfigError(f"task {name!r} must take (ctx) or (ctx, payload), not {len(params)} parameters")
        self.takes_payload = len(params) == 2
        hints = typing.get_type_hints(fn)
        payload_type = hints.get(params[1].name, Any) if self.takes_payload else type(None)
        self.payload_type: Any = payload_type
        self._payload = TypeAdapter(payload_type)
        self._payloads: TypeAdapter[list[Any]] | None = None  # list[payload_type], built on the first bulk add
        self.result_type: Any = hints.get("return", Any)
        self._result = _result_adapter(self.result_type)
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn
        if schedule is not None:
            self.scheduled_payload()  # a scheduled task runs with an empty payload: refuse one that cannot

    def scheduled_payload(self) -> Any:
        """The payload of this task's own schedule's jobs: None, or `{}` with every field's default."""
        if not self.takes_payload:
            return None
        try:
            return self.dump_payload({})
        except PayloadError as exc:
            raise ConfigError(f"task {self.name!r} has a schedule, so its jobs get an empty payload: give every"
                              f" payload field a default, or schedule it with Queue.schedule(..., payload) ({exc})"
                              ) from None

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue!r}>"

    async def __call__(self, ctx: Context, *args: Any) -> R:
        """Call the function directly (no queue), as in a unit test."""
        return await self.fn(ctx, *args)

    def dump_payload(self, payload: Any) -> Any:
        """Validate a payload against the task's type and return its JSON form; nothing is queued on error."""
        if not self.takes_payload:
            if payload is not None:
                raise PayloadError(f"task {self.name!r} takes no payload, but one was given")
            return None
        try:
            value = self._payload.validate_python(payload)
        except ValidationError as exc:
            raise PayloadError(f"invalid payload for task {self.name!r}: {exc}; nothing was queued") from exc
        data = self._payload.dump_python(value, mode="json")
        dump_json(data, f"payload for task {self.name!r}")
        return data

    def dump_payloads(self, payloads: list[Any]) -> list[Any]:
        """`dump_payload` for many payloads at once (one validation pass); nothing is queued on error."""
        if len(payloads) == 1:
            return [self.dump_payload(payloads[0])]
        if not self.takes_payload:
            given = [i for i, p in enumerate(payloads) if p is not None]
            if given:
                raise PayloadError(f"task {self.name!r} takes no payload, but payload {given[0]} is one")
            return payloads
        if self._payloads is None:
            self._payloads = TypeAdapter(list[self.payload_type])  # type: ignore[name-defined]
        try:
            values = self._payloads.validate_python(payloads)
        except ValidationError as exc:
            where = exc.errors()[0]["loc"][0]
            raise PayloadError(
                f"invalid payload {where} for task {self.name!r}: {exc}; nothing was queued"
            ) from exc
        data: list[Any] = self._payloads.dump_python(values, mode="json")
        dump_json(data, f"payloads for task {self.name!r}")
        return data

    def load_payload(self, data: Any) -> Any:
        """The payload as the function's parameter type."""
        return self._payload.validate_python(data)

    def dump_result(self, result: Any) -> Any:
        """The result's JSON form; PayloadError if it cannot be stored."""
        try:
            data = self._result.dump_python(result, mode="json")
        except Exception:  # noqa: BLE001 - pydantic raises several kinds; fall back to the raw value
            data = result
        if data.__class__ in _JSON_SCALARS and (data.__class__ is not str or data.isascii()):
            return data  # JSON as they are: spare the check (most results)
        dump_json(data, f"result of task {self.name!r}")
        return data

    def load_result(self, data: Any) -> R:
        """The stored result as the function's return type."""
        return typing.cast(R, self._result.validate_python(data))


def _result_adapter(result_type: Any) -> TypeAdapter[Any]:
    """The adapter of a task's results. Where pydantic infers the JSON (Any, dict, list...) it would turn NaN and
    infinity into null: keep them, so that `dump_json` refuses them; a model keeps its own config."""
    try:
        return TypeAdapter(result_type, config=ConfigDict(ser_json_inf_nan="constants"))
    except PydanticUserError:  # a model, dataclass or TypedDict: its own config applies
        return TypeAdapter(result_type)


def _options(
    attempts: int, backoff: Backoff | float | None, timeout: float | None, priority: int, max_stalls: int,
    keep_completed: Retention | None, keep_failed: Retention | None, webhook: str | None = None,
) -> JobOptions:
    if isinstance(backoff, int | float):
        backoff = Backoff.fixed(float(backoff))
    fields: dict[str, Any] = {"attempts": attempts, "timeout": timeout, "priority": priority, "max_stalls": max_stalls}
    if backoff is not None:
        fields["backoff"] = backoff
    if keep_completed is not None:
        fields["keep_completed"] = keep_completed
    if keep_failed is not None:
        fields["keep_failed"] = keep_failed
    if webhook is not None:
        fields["webhook"] = webhook
    try:
        return JobOptions(**fields)
    except ValidationError as exc:
        raise invalid("task options", exc) from None


@overload
def task(fn: Callable[..., Awaitable[R]], /) -> Task[R]: ...
@overload
def task(
    *, name: str | None = None, queue: str = "default", attempts: int = 1, backoff: Backoff | float | None = None,
    timeout: float | None = None, priority: int = 3, max_stalls: int = 1, keep_completed: Retention | None = None,
    keep_failed: Retention | None = None, cron: str | None = None, every: float | timedelta | None = None,
    tz: str = "UTC", catch_up: int = 0, overlap: Literal["skip", "queue", "allow"] = "skip",
    concurrency: int | None = None, webhook: str | None = None,
) -> Callable[[Callable[..., Awaitable[R]]], Task[R]]: ...
def task(
    fn: Callable[..., Awaitable[R]] | None = None, /, *, name: str | None = None, queue: str = "default",
    attempts: int = 1, backoff: Backoff | float | None = None, timeout: float | None = None, priority: int = 3,
    max_stalls: int = 1, keep_completed: Retention | None = None, keep_failed: Retention | None = None,
    cron: str | None = None, every: float | timedelta | None = None, tz: str = "UTC", catch_up: int = 0,
    overlap: Literal["skip", "queue", "allow"] = "skip", concurrency: int | None = None, webhook: str | None = None,
) -> Task[R] | Callable[[Callable[..., Awaitable[R]]], Task[R]]:
    """Declare an async function `(ctx, payload)` as a task; the payload's annotation validates at enqueue.

    With `cron=` (in time zone `tz`) or `every=`, every worker serving the task declares a schedule named after
    it, which adds one job per tick, with `catch_up` and `overlap` as in `Queue.schedule`. With `concurrency=n`,
    a worker runs at most n of its jobs at once, whatever the worker's own concurrency (its other tasks' jobs go
    ahead meanwhile). With `webhook=`, each job POSTs there when it completes or fails for good (see
    docs/webhooks.md)."""
    options = _options(attempts, backoff, timeout, priority, max_stalls, keep_completed, keep_failed, webhook)
    schedule = None
    if cron is not None or every is not None:
        if isinstance(catch_up, bool) or not isinstance(catch_up, int) or catch_up < 0:
            raise ConfigError(f"catch_up counts the missed ticks to fire after an outage, such as 3, not {catch_up!r}")
        if overlap not in ("skip", "queue", "allow"):
            raise ConfigError(f"overlap is 'skip', 'queue' or 'allow', not {overlap!r}")
        schedule = TaskSchedule(*timing(cron, every, tz), tz, catch_up, overlap)

    def wrap(f: Callable[..., Awaitable[R]]) -> Task[R]:
        t: Task[R] = Task(f, name=name or f.__name__, queue=queue, options=options, schedule=schedule,
                          concurrency=concurrency)
        _register(t)
        return t

    return wrap(fn) if fn is not None else wrap


def _origin(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _register(t: Task[Any]) -> None:
    """Register `t` under its name. The same function defined again (a re-run notebook cell, a reloaded module)
    replaces its earlier self; another function under a name already taken is refused, since jobs carry only
    the name and one of the two would silently run the other's jobs."""
    known = _registry.get(t.name)
    if known is not None and _origin(known.fn) != _origin(t.fn):
        raise ConfigError(
            f"task name {t.name!r} is already taken by {_origin(known.fn)}; {_origin(t.fn)} needs a name of its"
            f" own: @jobkit.task(name='{t.fn.__module__.rsplit('.', 1)[-1]}.{t.fn.__name__}')"
        )
    _registry[t.name] = t


def lookup(name: str) -> Task[Any]:
    """The task registered under `name` in this process."""
    try:
        return _registry[name]
    except KeyError:
        raise TaskNotFound(
            f"no task named {name!r} is registered in this process; import the module that defines it"
            f" (known: {', '.join(sorted(_registry)) or 'none'})"
        ) from None


def registered(queue: str | None = None) -> list[Task[Any]]:
    """Tasks registered in this process, optionally only those of one queue."""
    return [t for t in _registry.values() if queue is None or t.queue == queue]


def is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)
