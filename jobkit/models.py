"""The data jobkit stores and passes around: jobs, their options, progress and events (pydantic, JSON only)."""

from __future__ import annotations

import enum
import json
import os
import random
import re
import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from .errors import ConfigError, PayloadError

__all__ = [
    "Backoff",
    "Child",
    "ContinuePartial",
    "FailFast",
    "FlowPolicy",
    "FlowStatus",
    "HistoryEntry",
    "Job",
    "JobEvent",
    "JobOptions",
    "JobRef",
    "JobState",
    "Outcome",
    "Progress",
    "QueueCounts",
    "RateLimit",
    "Retention",
    "Schedule",
    "WaitAll",
    "WorkerInfo",
    "check_owner",
    "check_tags",
    "dump_json",
    "flow_policy",
    "invalid",
    "new_job",
    "new_job_id",
    "new_job_ids",
    "tag_filter",
    "trusted",
    "webhook_url",
]

Json = Any  # what json.dumps accepts; checked by `dump_json`
M = TypeVar("M", bound=BaseModel)
_object_setattr = object.__setattr__


def trusted(cls: type[M], fields: dict[str, Any], fields_set: set[str] | None = None) -> M:
    """A `cls` made from values already known valid, skipping validation, for the hot paths.

    Like pydantic's `model_construct`, without its per-field default handling: `fields` must hold every
    field, already of its type. The dict becomes the model's own. Private attributes take their defaults.
    `fields_set` names the fields given explicitly (default: all of them).
    """
    model = cls.__new__(cls)
    _object_setattr(model, "__dict__", fields)
    _object_setattr(model, "__pydantic_fields_set__", set(fields) if fields_set is None else fields_set)
    _object_setattr(model, "__pydantic_extra__", None)
    private = cls.__private_attributes__
    defaults = {name: attr.get_default() for name, attr in private.items()} if private else None
    _object_setattr(model, "__pydantic_private__", defaults)
    return model


def new_job_id() -> str:
    """A random, URL-safe job id."""
    return uuid.uuid4().hex


def new_job_ids(n: int) -> list[str]:
    """`n` random job ids of the same form as `new_job_id` (32 hex digits), drawn in one system call."""
    text = os.urandom(16 * n).hex()
    return [text[i:i + 32] for i in range(0, 32 * n, 32)]


def dump_json(value: Any, what: str) -> str:
    """JSON text for `value`, or a PayloadError saying what could not be stored (NaN, infinity, a lone surrogate
    that UTF-8 cannot encode, a type JSON does not have)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        text.encode()
        return text
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise PayloadError(
            f"{what} is not JSON-serialisable ({exc}); return or pass only dicts, lists, str, int, float,"
            " bool and None, or a pydantic model"
        ) from None


def invalid(what: str, exc: ValidationError) -> ConfigError:
    """A ConfigError naming each invalid field, why, and the value given (e.g. a NaN delay)."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg'].lower()} (got {e.get('input')!r})"
        for e in exc.errors(include_url=False)
    )
    return ConfigError(f"invalid {what}: {problems}")


OWNER_MAX = 200  # characters of an owner
TAGS_MAX = 20  # tags per job
TAG_KEY_MAX = 64  # characters of a tag's key
TAG_VALUE_MAX = 200  # characters of a tag's value
_TAG_KEY = re.compile(r"^[A-Za-z0-9_.:-]+$")


def _plain(text: str) -> bool:
    return text.isprintable() and text == text.strip()


def check_owner(owner: Any) -> str | None:
    """`owner` if it is a usable owner (None: no owner), else a ConfigError saying what one may be."""
    if owner is None:
        return None
    if not isinstance(owner, str) or not owner or len(owner) > OWNER_MAX or not _plain(owner):
        raise ConfigError(f"invalid owner {owner!r}: use a non-empty string of at most {OWNER_MAX} printable"
                          " characters, without leading or trailing spaces (a user id, say)")
    return owner


def check_tags(tags: Any) -> dict[str, str]:
    """`tags` as a dict if usable ({} for None), else a ConfigError saying what tags may be."""
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise ConfigError(f"tags are a dict of strings, like {{'doc': 'd-1'}}, not {type(tags).__name__}")
    if len(tags) > TAGS_MAX:
        raise ConfigError(f"a job takes at most {TAGS_MAX} tags, not {len(tags)}: put the rest in its payload")
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.match(key) or len(key) > TAG_KEY_MAX:
            raise ConfigError(f"invalid tag key {key!r}: use 1 to {TAG_KEY_MAX} letters, digits or _ . : -")
        if not isinstance(value, str) or not value or len(value) > TAG_VALUE_MAX or not _plain(value):
            raise ConfigError(f"invalid value {value!r} of tag {key!r}: use a non-empty string of at most"
                              f" {TAG_VALUE_MAX} printable characters, without leading or trailing spaces")
    return dict(tags)


def tag_filter(tag: tuple[str, str] | str) -> tuple[str, str]:
    """A tag to filter by, from ("doc", "d-1") or "doc=d-1"; ConfigError otherwise."""
    if isinstance(tag, str):
        key, sep, value = tag.partition("=")
        if not sep:
            raise ConfigError(f"a tag filter is 'key=value' or (key, value), not {tag!r}")
        tag = (key, value)
    if not (isinstance(tag, tuple) and len(tag) == 2):
        raise ConfigError(f"a tag filter is 'key=value' or (key, value), not {tag!r}")
    check_tags({tag[0]: tag[1]})
    return tag[0], tag[1]


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING_CHILDREN = "waiting-children"

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


class Backoff(BaseModel):
    """Delay before retry n (1-based): fixed, or exponential with a cap and optional jitter."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    kind: Literal["fixed", "exponential"] = "fixed"
    delay: float = Field(default=1.0, ge=0)
    factor: float = Field(default=2.0, ge=1)
    max_delay: float = Field(default=3600.0, ge=0)
    jitter: float = Field(default=0.0, ge=0, le=1)

    @classmethod
    def fixed(cls, delay: float) -> Backoff:
        """`delay` seconds before every retry; ConfigError unless it is a finite number, zero or more."""
        return cls._made(kind="fixed", delay=delay)

    @classmethod
    def exponential(
        cls, delay: float, *, factor: float = 2.0, max_delay: float = 3600.0, jitter: float = 0.0
    ) -> Backoff:
        """`delay` * `factor` ** (retry - 1) seconds, at most `max_delay`; ConfigError for values out of range."""
        return cls._made(kind="exponential", delay=delay, factor=factor, max_delay=max_delay, jitter=jitter)

    @classmethod
    def _made(cls, **fields: Any) -> Backoff:
        try:
            return cls(**fields)
        except ValidationError as exc:
            raise invalid("backoff", exc) from None

    def seconds(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        if self.kind == "fixed":
            base = self.delay
        else:
            base = min(self.max_delay, self.delay * self.factor ** max(0, retry - 1))
        if self.jitter:
            base *= 1 - self.jitter * random.random()
        return base


class Retention(BaseModel):
    """How long finished jobs are kept: at most `age` seconds, and (completed and failed jobs) the newest `count` of
    their state per queue."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    age: float | None = Field(default=None, ge=0)
    count: int | None = Field(default=None, ge=0)


class RateLimit(BaseModel):
    """At most `limit` jobs started per `per` seconds, shared by every worker of a queue."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    limit: int = Field(ge=1)
    per: float = Field(gt=0)

    def __init__(self, limit: int, per: float = 1.0, **kw: Any) -> None:
        super().__init__(limit=limit, per=per, **kw)


DEFAULT_KEEP_COMPLETED = Retention(age=24 * 3600, count=1000)
DEFAULT_KEEP_FAILED = Retention(age=7 * 24 * 3600)


class JobOptions(BaseModel):
    """Per-job settings; defaults come from the task, then from the call."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    attempts: int = Field(default=1, ge=1, description="total tries, the first included")
    backoff: Backoff = Backoff()
    timeout: float | None = Field(default=None, gt=0, description="seconds per attempt")
    priority: int = Field(default=3, ge=0, le=1000, description="lower runs first; 1 critical … 4 low")
    max_stalls: int = Field(default=1, ge=0, description="lost leases tolerated before failing")
    keep_completed: Retention = DEFAULT_KEEP_COMPLETED
    keep_failed: Retention = DEFAULT_KEEP_FAILED
    webhook: str | None = Field(default=None, description="URL POSTed when the job completes or fails for good")

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        return None if url is None else webhook_url(url)


def webhook_url(url: str) -> str:
    """`url` if it can be a webhook target (http or https, a host, no spaces or quotes), else ValueError."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if not sep or scheme.lower() not in ("http", "https") or not host or any(c in url for c in ' "<>\\\n\r\t'):
        raise ValueError(f"webhook {url!r}: give an http:// or https:// URL with a host, e.g. https://example.com/hook")
    return url


class Progress(BaseModel):
    """Structured progress: a percentage, a message and free extra fields."""

    model_config = ConfigDict(allow_inf_nan=False)

    percent: float = Field(default=0.0, ge=0, le=100)
    message: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class JobRef(BaseModel):
    """A job named by its queue and id: a flow child's parent, a job that depends on another."""

    model_config = ConfigDict(frozen=True)

    queue: str
    id: str

    def __str__(self) -> str:
        return f"{self.queue}/{self.id}"


class FailFast(BaseModel):
    """Flow policy (the default): the first child that fails for good fails the parent, and the children not yet
    started are cancelled."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["fail_fast"] = "fail_fast"


class WaitAll(BaseModel):
    """Flow policy: the parent runs once every child has ended, however many failed (it reads which)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["wait_all"] = "wait_all"


class ContinuePartial(BaseModel):
    """Flow policy: the parent runs once every child has ended if at most `max_failed` of them (a share, 0 to 1)
    failed or were cancelled; past that share it fails at once, as fail_fast does."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False)

    kind: Literal["continue_partial"] = "continue_partial"
    max_failed: float = Field(default=0.05, ge=0, le=1)

    def __init__(self, max_failed: float = 0.05, **kw: Any) -> None:
        try:
            super().__init__(max_failed=max_failed, **kw)
        except ValidationError as exc:
            raise invalid("flow policy", exc) from None


FlowPolicy = Annotated[FailFast | WaitAll | ContinuePartial, Field(discriminator="kind")]
_POLICY_NAMES = {"fail_fast": FailFast, "wait_all": WaitAll, "continue_partial": ContinuePartial}


def flow_policy(value: FailFast | WaitAll | ContinuePartial | str | None) -> FailFast | WaitAll | ContinuePartial:
    """A flow policy from a policy object or its name ("fail_fast", "wait_all", "continue_partial"); None: fail_fast."""
    if value is None:
        return FailFast()
    if isinstance(value, FailFast | WaitAll | ContinuePartial):
        return value
    if isinstance(value, str) and value in _POLICY_NAMES:
        made: FailFast | WaitAll | ContinuePartial = _POLICY_NAMES[value]()
        return made
    raise ConfigError(f"unknown flow policy {value!r}: use jobkit.FailFast(), jobkit.WaitAll(),"
                      " jobkit.ContinuePartial(max_failed=0.05), or their names 'fail_fast', 'wait_all',"
                      " 'continue_partial'")


class FlowStatus(BaseModel):
    """A parent's children (and dependencies) as counted so far, and the policy that decides when it runs."""

    policy: FlowPolicy = Field(default_factory=FailFast)
    total: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def ended(self) -> int:
        return self.completed + self.failed + self.cancelled

    @property
    def pending(self) -> int:
        """Children not ended yet."""
        return self.total - self.ended

    @property
    def percent(self) -> float:
        return 100.0 * self.ended / self.total if self.total else 100.0


class Child(BaseModel):
    """One child (or dependency) of a parent, as `ctx.children()` and `JobHandle.children()` read it.

    `state` is the child's state now, or the last one its parent counted when the child has since been removed
    (`removed`: retention took it after the parent ended; its payload and result are gone)."""

    id: str
    queue: str
    name: str = ""
    state: JobState
    data: Json = None
    result: Json = None
    error: str | None = None
    dependency: bool = False  # named in depends_on, not a child the flow made
    removed: bool = False


class HistoryEntry(BaseModel):
    """One line of a job's story: a transition, when, in which attempt, by whom, and why."""

    at: float
    state: JobState
    attempt: int = 0
    # The worker that held the job then; entries stored before jobkit 0.2 call it "owner".
    worker: str | None = Field(default=None, validation_alias=AliasChoices("worker", "owner"))
    note: str = ""


HISTORY_LIMIT = 50


class Job(BaseModel):
    """A job as stored: what to run, its state, and everything that happened to it."""

    id: str
    name: str
    queue: str
    state: JobState = JobState.WAITING
    data: Json = None
    result: Json = None
    options: JobOptions = Field(default_factory=JobOptions)
    progress: Progress = Field(default_factory=Progress)
    checkpoint: Json = None
    attempts: int = 0
    stalls: int = 0
    error: str | None = None
    traceback: str | None = None
    worker: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    created_at: float = Field(default_factory=time.time)
    run_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    seq: int = 0  # FIFO tie-breaker within a priority, set by the backend
    # Flows (left out of the stored JSON while unset): the parent this job is a child of, the jobs that wait for it
    # through `depends_on`, and on a parent, its children's count and policy.
    parent: JobRef | None = Field(default=None, exclude_if=lambda v: v is None)
    dependents: tuple[JobRef, ...] = Field(default=(), exclude_if=lambda v: not v)
    flow: FlowStatus | None = Field(default=None, exclude_if=lambda v: v is None)
    # Whom the job is for (a user id: reads scoped by owner never show another's jobs), and small labels to find it
    # by; both indexed by the backends, set when it is added and never changed.
    owner: str | None = Field(default=None, exclude_if=lambda v: v is None)
    tags: dict[str, str] = Field(default_factory=dict, exclude_if=lambda v: not v)

    @property
    def priority(self) -> int:
        return self.options.priority

    @property
    def finished(self) -> bool:
        return self.state.finished

    def note(self, state: JobState, at: float, note: str = "") -> None:
        """Record a transition in the job's history (kept to the last HISTORY_LIMIT lines)."""
        history = self.history
        history.append(trusted(HistoryEntry, {
            "at": at, "state": state, "attempt": self.attempts, "worker": self.worker, "note": note,
        }))
        if len(history) > HISTORY_LIMIT:
            del history[: len(history) - HISTORY_LIMIT]


_NEW_JOB_FIELDS = frozenset({"id", "name", "queue", "data", "options", "created_at", "run_at"})


def new_job(id: str, name: str, queue: str, data: Json, options: JobOptions, created_at: float, run_at: float,
            owner: str | None = None, tags: dict[str, str] | None = None) -> Job:
    """A fresh job, as `Job(id=..., ..., run_at=...)` builds it, from values already validated (bulk adds)."""
    fields_set = set(_NEW_JOB_FIELDS)
    if owner is not None:
        fields_set.add("owner")
    if tags:
        fields_set.add("tags")
    return trusted(Job, {
        "id": id, "name": name, "queue": queue, "state": JobState.WAITING, "data": data, "result": None,
        "options": options, "progress": trusted(Progress, {"percent": 0.0, "message": "", "extra": {}}, set()),
        "checkpoint": None, "attempts": 0, "stalls": 0, "error": None, "traceback": None, "worker": None,
        "lease_until": None, "cancel_requested": False, "created_at": created_at, "run_at": run_at,
        "started_at": None, "finished_at": None, "expires_at": None, "history": [], "seq": 0,
        "parent": None, "dependents": (), "flow": None, "owner": owner, "tags": dict(tags) if tags else {},
    }, fields_set)


class Outcome(BaseModel):
    """How an attempt ended, as the worker hands it to the backend.

    `state` is COMPLETED, FAILED or CANCELLED, or WAITING/DELAYED for a retry at `run_at`. `started=False` hands
    back a job claimed ahead that never ran: its claim's attempt is given back.
    """

    job_id: str
    state: JobState
    result: Json = None
    error: str | None = None
    traceback: str | None = None
    run_at: float = 0.0
    expires_at: float | None = None
    started: bool = True

    @field_validator("state")
    @classmethod
    def _not_active(cls, v: JobState) -> JobState:
        if v in (JobState.ACTIVE, JobState.WAITING_CHILDREN):
            raise ValueError(f"an outcome cannot be {v}")
        return v

    @field_validator("started")
    @classmethod
    def _unstarted_goes_back(cls, v: bool, info: ValidationInfo) -> bool:
        if not v and info.data.get("state") not in (JobState.WAITING, JobState.DELAYED):
            raise ValueError("an outcome with started=False hands a job back: its state must be waiting or delayed")
        return v


class JobEvent(BaseModel):
    """One transition of one job, as published to subscribers of its queue."""

    id: str = ""  # the backend's event id, usable as `since=` to resume
    queue: str
    job_id: str
    name: str = ""
    # added, active, progress, completed, failed, retrying, cancelled, cancel-requested, stalled, removed; and for a
    # flow's parent: waiting (its children ended: it runs next), waiting-children (a re-run made it wait again)
    event: str
    state: JobState
    at: float = Field(default_factory=time.time)
    attempt: int = 0
    progress: Progress | None = None
    error: str | None = None
    owner: str | None = None  # the job's owner, so a feed can be scoped to one
    # (result,) when a "completed" event carries its job's result (a backend may, for small results), else None.
    _result: tuple[Any] | None = PrivateAttr(default=None)

    def carry_result(self, result: Any) -> None:
        if self.__pydantic_private__ is None:  # made by `trusted`, which skips private attributes
            _object_setattr(self, "__pydantic_private__", {})
        self._result = (result,)

    @property
    def carried_result(self) -> tuple[Any] | None:
        """(result,) when this "completed" event carries the job's result, so a waiter need not read the job."""
        private = self.__pydantic_private__
        return private.get("_result") if private else None


class QueueCounts(BaseModel):
    """How many jobs a queue holds in each state, and whether it is paused."""

    waiting: int = 0
    delayed: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting_children: int = Field(default=0, alias="waiting-children")
    paused: bool = False

    model_config = ConfigDict(populate_by_name=True)

    @property
    def total(self) -> int:
        return (self.waiting + self.delayed + self.active + self.completed + self.failed + self.cancelled
                + self.waiting_children)


class WorkerInfo(BaseModel):
    """A live worker, as its heartbeat describes it."""

    id: str
    queues: list[str]
    names: list[str] = Field(default_factory=list)
    host: str = ""
    pid: int = 0
    embedded: bool = False
    concurrency: int = 1
    active: int = 0
    started_at: float = Field(default_factory=time.time)
    seen_at: float = Field(default_factory=time.time)


class Schedule(BaseModel):
    """A job that a queue's workers add on a cron expression or every so many seconds, exactly one per tick."""

    id: str
    queue: str
    task: str
    data: Json = None  # the payload every tick's job gets, as validated when the schedule was made
    cron: str | None = None
    every: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="seconds between ticks")
    tz: str = "UTC"
    catch_up: int = Field(default=0, ge=0, description="missed ticks still fired after every worker was down")
    overlap: Literal["skip", "queue", "allow"] = "skip"
    paused: bool = False
    declared: bool = False  # by `@task(cron=...)` in the workers that serve the task, rather than by a call
    next_at: float = Field(allow_inf_nan=False, description="the next tick, UTC epoch seconds")
    last_at: float | None = None  # the latest tick fired: ticks only ever move past it
    last_job: str | None = None  # that tick's job
    fired: int = 0
    skipped: int = 0  # ticks missed (every worker down) or skipped (the previous run still going)
    created_at: float = Field(default_factory=time.time)
