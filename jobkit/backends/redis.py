"""`redis://` and `rediss://`: jobs in Redis, every transition one Lua script, events in a Redis Stream.

A queue's keys all start with `jobkit:{<queue>}:`, so they share one Redis Cluster hash slot:

    meta            hash: paused, seq counter, rate-limit window (ws, wu), global concurrency (gc)
    j:<id>          hash per job: the scalar fields scripts read and change (a compact listpack)
    d:<id>          string per job: its static JSON (id, name, queue, data, options, created_at), then
                    its history entries (appended)
    waiting         zset id by priority * 2^40 + seq      delayed   zset id by run_at
    active          zset id by lease_until                 completed, failed, cancelled:
                                                           zset "<seq>:<id>" by finished_at
    exp:<state>     zset "<seq>:<id>" by expires_at, for the finished states
    ix:<state>      zset "<created_at>:<seq>:<id>" (scores 0): newest-first paging for `list`
    events          stream of JobEvents, trimmed to about 10,000 entries
    wake            stream, about 100 entries: one per script whose "added", "retrying", "waiting" or job-less
                    "resumed" event made work claimable (field f: that event's id); workers wait on it
    done:<token>    list: the ends of the jobs that a backend instance's handles watch (field wt of the job,
                    see `watch`), pushed by the script that ends them; expires a minute after the last push

    m:<minute>      hash per minute of metrics (see _metrics.py; field "<task>" NUL "<field>", and "#": the
                    minute's total), expiring after 14 days; metrics: zset of those minutes, trimmed as a new
                    minute starts

Global keys, never in a script with a queue's keys: `jobkit:queues` (set of queue names) and
`jobkit:{workers}:info` / `jobkit:{workers}:seen` (heartbeats).

Quotas, per queue too: `w:<key>` (zset of a sliding-window counter's grants by when they lapse) with `wt:<key>`
(hash: their total, a member counter), both expiring a minute after the last grant lapses; `b:<key>` (hash: a
budget's spent and reserved).

The scripts (redis_lua/) run as one function library on Redis 7+ (FCALL: _lib.lua and the shared parts run once,
at FUNCTION LOAD), else as EVALSHA, each script with _lib.lua and its parts in front (see _library, _scripts).

Hot-path commands are packed here and sent on raw redis-py connections (one write, one read). Per queue,
blocking loops on connections of their own read the event stream for subscriptions, the wake stream for
`wait_for_work`, and this instance's inbox for the ends of watched jobs (see _redis_readers.py).
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import hashlib
import inspect
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError, to_json
from redis import exceptions as rexc
from redis.asyncio.connection import Connection, parse_url
from redis.crc import key_slot

from ..deliveries import DeliveryAttempt, DeliveryState, WebhookDelivery
from ..errors import BackendError, BackendUnavailable, ConfigError, JobNotFound, PayloadError
from ..models import (
    DEFAULT_KEEP_FAILED,
    HISTORY_LIMIT,
    TERMINAL_STATES,
    FlowStatus,
    HistoryEntry,
    Job,
    JobEvent,
    JobOptions,
    JobRef,
    JobState,
    Outcome,
    Progress,
    QueueCounts,
    RateLimit,
    WorkerInfo,
    trusted,
)
from ..urls import mask_url as _mask
from ._metrics import MetricRow
from ._redis_readers import Ending, Feed, Inbox, Item, Reader, Waker, pump, settle
from ._redis_readers import EventId as _EventId
from ._redis_readers import Segment as _Segment
from ._redis_readers import command as _command
from ._redis_readers import event_id as _id
from ._redis_readers import event_of as _event
from ._redis_readers import pack as _pack
from ._redis_servers import Address, Lane, Servers, parse_cluster_hosts
from ._transitions import assign, copy, unreadable_error
from .base import Ask, Backend, ChildLink, ClaimResult, FlowSpec, Offer, Record, Spend, check_asks, check_record_add

__all__ = ["RedisBackend"]

log = logging.getLogger("jobkit.redis")

QUEUE_KEYS = (
    "meta", "events",
    "waiting", "delayed", "active", "completed", "failed", "cancelled",
    "ix:waiting", "ix:delayed", "ix:active", "ix:completed", "ix:failed", "ix:cancelled",
    "exp:completed", "exp:failed", "exp:cancelled",
    "j:", "d:",  # prefixes of the job keys, not keys themselves
    "waiting-children", "ix:waiting-children", "outbox", "unsealed",
    "fl:", "fo:",  # prefixes of each parent's ledger keys (see redis_lua/_flow.lua)
    "wh", "wh:status", "wh:due", "wh:ended", "rec:webhook",  # webhooks' outbox (see redis_lua/_outbox.lua)
    "m:", "metrics",  # the prefix of the metrics' minute keys, and their index (see redis_lua/_metrics.lua)
)
QUEUES_KEY = "jobkit:queues"
WORKER_KEYS = ("jobkit:{workers}:info", "jobkit:{workers}:seen")
QUEUES_SLOT = key_slot(QUEUES_KEY.encode())
WORKERS_SLOT = key_slot(WORKER_KEYS[0].encode())
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
REDIRECTS = 5  # MOVED / ASK / TRYAGAIN answers followed for one command before giving up
QUEUE_SCRIPTS = ("add", "claim", "renew", "finish", "finish_claim", "progress", "checkpoint", "cancel", "pause",
                 "retry", "clean", "recover", "get", "list", "counts", "record_add", "quarantine", "flow_add",
                 "flow_seal", "flow_deliver", "children", "concurrency", "watch", "webhook_claim", "webhook_settle",
                 "webhook_replay", "metrics")
# Shared pieces a queue script needs after _lib.lua, before its own body.
SCRIPT_PARTS = {"add": ("_claim",), "record_add": ("_claim",), "claim": ("_claim",),
                "finish": ("_outbox", "_flow", "_metrics", "_finish", "_remove"),
                "finish_claim": ("_outbox", "_flow", "_metrics", "_finish", "_remove", "_claim"), "clean": ("_remove",),
                "cancel": ("_outbox", "_flow"), "recover": ("_outbox", "_flow", "_metrics"),
                "webhook_settle": ("_outbox",),
                "quarantine": ("_outbox", "_flow"), "flow_add": ("_outbox", "_flow"), "flow_seal": ("_outbox", "_flow"),
                "flow_deliver": ("_outbox", "_flow"), "children": ("_outbox", "_flow")}
# Queue scripts that end with another's body: record_add checks and writes a record, then adds jobs as add does.
SCRIPT_TAILS = {"record_add": "add"}
GLOBAL_SCRIPTS = ("heartbeat", "workers", "record", "take", "restrict", "budget")  # none needs _lib.lua
STATES = ("waiting", "delayed", "active", "completed", "failed", "cancelled", "waiting-children")

ADD_FIELDS = 13  # arguments per job of add.lua
OUTCOME_FIELDS = 8  # arguments per outcome of _finish.lua
FLOW_FIELDS = 20  # arguments per node of flow_add.lua
NOTICE_GRACE = 1.0  # seconds a notice waits in its outbox before maintenance delivers it (its writer usually has)
OVERLAP_ADDS = 64  # adds of this many jobs build their answers while Redis runs the script
BORN_KEPT = 1000  # jobs added by this instance that it remembers as likely to be watched (see watch)
LIST_BUDGET = 5000  # jobs one `list` script call examines before handing back a cursor
FORGET_WORKERS_AFTER = 3600.0  # heartbeats expired this long ago are deleted

_PLAIN_FIELDS = frozenset(
    {"id", "name", "queue", "data", "options", "created_at", "run_at", "state", "seq", "attempts", "parent", "flow",
     "owner", "tags"}
)
_SINCE = re.compile(r"^(\d+)(?:-(\d+))?$")
_R = TypeVar("_R", bound=Reader)
_RECORD_ID = re.compile(r'^\{"id":("(?:[^"\\]|\\.)*")')  # a job's JSON starts with its id (see _lib.lua compose)


def _claim_filter(names: Collection[str] | None, caps: Mapping[str, int] | None) -> list[Any]:
    """A claim's name filter and caps as claim_filter in _claim.lua reads them."""
    out: list[Any] = [-1] if names is None else [len(names), *names]
    for name, cap in (caps or {}).items():
        out += (name, cap)
    return out


def _as_added(job: Job) -> Job:
    """`job` as add.lua stores it (state and first history entry), less the `seq` the script assigns."""
    state = JobState.DELAYED if job.run_at > job.created_at else JobState.WAITING
    note = trusted(HistoryEntry, {"at": job.created_at, "state": state, "attempt": job.attempts, "worker": None,
                                  "note": "added"})
    added = copy(job, [*job.history[-(HISTORY_LIMIT - 1):], note])
    assign(added, state=state)
    return added


def _indexed_fields(job: Job) -> dict[str, str]:
    """The hash fields of a new job that index_job (_lib.lua) indexes: ow, its owner; tg, its tags as "key=value"."""
    out: dict[str, str] = {}
    if job.owner is not None:
        out["ow"] = job.owner
    if job.tags:
        out["tg"] = json.dumps([f"{k}={v}" for k, v in job.tags.items()])
    return out


def _end_fields(job: Job, watcher: str | None) -> dict[str, str]:
    """The hash fields the finish scripts read when a new job ends: wt, its watcher's inbox token (see watch); wh,
    its webhook (see _outbox.lua)."""
    out = {"wt": watcher} if watcher else {}
    if job.options.webhook is not None:
        out["wh"] = job.options.webhook
    return out


def _since(since: str) -> _EventId:
    m = _SINCE.match(since.strip())
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def _to_json(value: Any, what: str) -> bytes:
    try:
        return to_json(value)
    except PydanticSerializationError as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable ({exc}); use only dicts, lists, str, int, float, bool and None,"
            " or a pydantic model"
        ) from None


def _keep(keep_completed: int | None, keep_failed: int | None) -> str:
    """The `keep` argument of the finish scripts: "<completed>,<failed>", each blank for no count limit ('' for
    neither)."""
    if keep_completed is None and keep_failed is None:
        return ""
    return ",".join("" if n is None else str(max(0, n)) for n in (keep_completed, keep_failed))


def _job(text: str) -> Job:
    return Job.model_validate_json(text)


class _Node:
    """One step of a flow add on Redis: a job of the flow (`spec`), or the registration of a dependency (`spec` is
    None) with the job waiting for it (`parent`). `level` orders the scripts: a node goes in its parent's script
    when on the same queue, else in one of the next level."""

    __slots__ = ("id", "index", "level", "level_of_parent", "link_index", "parent", "queue", "seals_here", "spec")

    def __init__(self, queue: str, job_id: str, spec: FlowSpec | None, index: int, parent: tuple[str, str] | None,
                 level: int, level_of_parent: int, link_index: int) -> None:
        self.queue, self.id, self.spec, self.index, self.parent = queue, job_id, spec, index, parent
        self.level, self.level_of_parent, self.link_index = level, level_of_parent, link_index
        self.seals_here = False  # a parent whose every link is in its own script


def _flow_nodes(specs: Sequence[FlowSpec]) -> list[_Node]:
    """The nodes of a flow add, parents before their children and dependencies (see _Node)."""
    levels: dict[tuple[str, str], int] = {}
    link_of: dict[tuple[str, str], tuple[tuple[str, str], int]] = {}
    nodes: list[_Node] = []
    for i, spec in enumerate(specs):
        job = spec.job
        key = (job.queue, job.id)
        parent = None if job.parent is None else (job.parent.queue, job.parent.id)
        if parent is None:
            level = plevel = 0
        else:
            plevel = levels.get(parent, 0)
            level = plevel if parent[0] == job.queue else plevel + 1
        levels[key] = level
        at = link_of.get(key, (parent, 0))[1] if parent is not None else 0
        node = _Node(job.queue, job.id, spec, i, parent, level, plevel, at)
        node.seals_here = bool(spec.links) and all(r.queue == job.queue for r, _ in spec.links)
        nodes.append(node)
        for k, (r, owned) in enumerate(spec.links):
            link_of[(r.queue, r.id)] = (key, k)
            if not owned:
                dl = level if r.queue == job.queue else level + 1
                nodes.append(_Node(r.queue, r.id, None, -1, key, dl, level, k))
    return nodes


def _accepted_options(cls: type) -> set[str]:
    names = {"max_connections"}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return names - {"self"}


_sources: dict[str, tuple[str, str]] = {}
_library_code: list[tuple[str, str]] = []
PART_ORDER = SCRIPT_PARTS["finish_claim"]  # every part, each after those it uses
READ_ONLY_SCRIPTS = ("get", "list", "counts", "metrics", "workers")  # run while Redis is out of memory, too


def _read(name: str) -> str:
    return resources.files("jobkit.backends").joinpath("redis_lua").joinpath(f"{name}.lua").read_text("utf-8")


def _body(name: str) -> str:
    """A script's own code: its body, then its tail's (see SCRIPT_TAILS)."""
    return "\n".join([_read(name), *([_read(SCRIPT_TAILS[name])] if name in SCRIPT_TAILS else [])])


def _scripts() -> dict[str, tuple[str, str]]:
    """{name: (sha1, source)} of the Lua scripts beside this module for EVAL: a queue script is _lib.lua, its parts,
    `bind()` (which reads KEYS), then its body."""
    if not _sources:
        lib = _read("_lib")
        for name in QUEUE_SCRIPTS + GLOBAL_SCRIPTS:
            src = _body(name)
            if name in QUEUE_SCRIPTS:
                src = "\n".join([lib, *(_read(part) for part in SCRIPT_PARTS.get(name, ())), "bind()", src])
            _sources[name] = (hashlib.sha1(src.encode()).hexdigest(), src)
    return _sources


def _library() -> tuple[str, str]:
    """(name, code) of every script as one Redis function library (FUNCTION LOAD, Redis 7+), named after a hash of
    its code so that versions of jobkit sharing a server do not replace each other's: _lib.lua and every part run
    once, at load; script `s` is the function `<name>_<s>`, whose callback binds KEYS and ARGV, runs `bind()` (queue
    scripts), then the script's body, exactly as EVAL runs it."""
    if not _library_code:
        parts = "\n".join([_read("_lib"), *(_read(part) for part in PART_ORDER)])
        functions = []
        for name in QUEUE_SCRIPTS + GLOBAL_SCRIPTS:
            flags = "{'no-writes'}" if name in READ_ONLY_SCRIPTS else "{}"
            start = "bind()\n" if name in QUEUE_SCRIPTS else ""
            functions.append(f"redis.register_function{{function_name = LIB .. '_{name}', flags = {flags}, callback ="
                             f" function(keys_, argv_)\nKEYS, ARGV = keys_, argv_\n{start}{_body(name)}\nend}}")
        code = "\n".join(["local KEYS, ARGV", parts, *functions])
        name = "jobkit_" + hashlib.sha1(code.encode()).hexdigest()[:16]
        _library_code.append((name, f"#!lua name={name}\nlocal LIB = '{name}'\n{code}"))
    return _library_code[0]


class _Queue:
    """A queue's key names, with the fixed ones already packed for EVALSHA, and their cluster hash slot."""

    __slots__ = ("dp", "events", "jp", "keys", "outbox", "packed", "prefix", "slot", "wake")

    def __init__(self, name: str) -> None:
        self.prefix = prefix = f"jobkit:{{{name}}}:"
        self.keys = [prefix + k for k in QUEUE_KEYS]
        self.wake = prefix + "wake"  # not in KEYS: scripts name it from the queue's prefix (see _lib.lua)
        self.events, self.jp, self.dp, self.outbox = self.keys[1], self.keys[17], self.keys[18], self.keys[21]
        self.packed = _pack(self.keys)
        self.slot = key_slot(self.keys[0].encode())

    def inbox(self, token: str) -> str:
        return f"{self.prefix}done:{token}"


class _Handing:
    """An idle worker's offer that an add under way claims for (see RedisBackend._hand_over)."""

    __slots__ = ("offer", "taken", "woken")

    def __init__(self, offer: Offer, taken: asyncio.Future[ClaimResult], woken: asyncio.Future[None]) -> None:
        self.offer, self.taken, self.woken = offer, taken, woken

    async def claimed(self, backend: RedisBackend, queue: str, reply: Any) -> None:
        """add.lua's claim for the offer: {retry_in, ran dry, job JSON...}."""
        try:
            jobs = await backend._claimed(queue, self.offer.worker, reply[2:])
        except BaseException as exc:
            self.unknown(exc)
            raise
        if not self.taken.done():
            self.taken.set_result(ClaimResult(jobs, float(reply[0]) if reply[0] else None, reply[1] == 1))
        settle(self.woken)

    def unknown(self, exc: BaseException | None = None) -> None:
        if not self.taken.done():
            error = exc if isinstance(exc, BackendError) else BackendError(
                "adding jobs failed before its answer came: whether it handed any to this worker is not known (such"
                " a job's lease expires and it runs again)")
            self.taken.set_exception(error)
            self.taken.exception()  # retrieved: a worker that is gone need not await it
        settle(self.woken)


class _Subscription(AsyncIterator[JobEvent]):
    """Events after `start`: the retained ones up to `upto` from XRANGE, then the feed's live ones. Given a
    `backlog` (the feed's kept entries up to `upto`), it starts at `upto` and yields that backlog first."""

    def __init__(self, backend: RedisBackend, feed: Feed, inbox: asyncio.Queue[Item], start: _EventId,
                 upto: _EventId, backlog: list[tuple[_EventId, JobEvent]] | None = None) -> None:
        self._backend, self._feed, self._inbox = backend, feed, inbox
        self._seen, self._upto = start, upto
        self._backlog = backlog[::-1] if backlog else []  # popped from the end
        self._closed = False

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> JobEvent:
        if self._closed or self._backend._servers is None:
            self.close()
            raise StopAsyncIteration
        while self._seen < self._upto and not self._backlog:
            self._backlog, read_to = await self._backend._range(self._feed, self._seen, self._upto)
            self._backlog.reverse()
            if not self._backlog:
                self._seen = read_to
        if self._backlog:
            key, ev = self._backlog.pop()
            self._seen = max(self._seen, key)  # a backlog from the feed's kept entries ends at the start id
            return ev
        while True:
            item = await self._inbox.get()
            if item is None:
                self.close()
                raise StopAsyncIteration
            if item[0] > self._seen:
                self._seen = item[0]
                return item[1]

    def close(self) -> None:
        self._closed = True
        self._feed.subs.discard(self._inbox)

    async def aclose(self) -> None:
        self.close()


class RedisBackend(Backend):
    """Jobs in Redis: each state change is one Lua script, so it is atomic and stays in one cluster slot."""

    is_local = False
    claims_overlap = True
    takes_offers = True

    def __init__(self, url: str, *, functions: bool | None = None) -> None:
        """`functions`: run the scripts as a Redis function library (Redis 7+; None: where the server takes it,
        False: always EVALSHA, True: refuse to open without it)."""
        self.url = url
        where = _mask(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unclosed [IPv6 bracket
            raise ConfigError(f"invalid Redis URL {where}: {exc}") from None
        scheme = parts.scheme.lower()
        seeds: list[Address] | None = None
        if scheme in CLUSTER_SCHEMES:
            # Seed nodes: redis+cluster://[user:password@]host:port[,host:port...]; redis-py reads the rest
            # (credentials, TLS, options) from the same URL with the first seed as its host.
            userinfo, _, hosts = parts.netloc.rpartition("@")
            try:
                seeds = parse_cluster_hosts(hosts)
            except ValueError as exc:
                raise ConfigError(f"invalid Redis Cluster URL {where}: {exc}; use"
                                  " redis+cluster://[user:password@]host:port[,host:port...]") from None
            if parts.path.strip("/") not in ("", "0"):
                raise ConfigError(f"invalid Redis Cluster URL {where}: a cluster has only database 0; drop the path")
            first = f"[{seeds[0][0]}]" if ":" in seeds[0][0] else seeds[0][0]
            netloc = f"{userinfo}@{first}:{seeds[0][1]}" if userinfo else f"{first}:{seeds[0][1]}"
            parts = parts._replace(scheme=CLUSTER_SCHEMES[scheme], netloc=netloc)
            scheme = parts.scheme
            url_for_options = urlunsplit(parts)
        else:
            url_for_options = url
        if scheme not in ("redis", "rediss"):
            raise ConfigError(f"{where} is not a Redis URL: use redis://[user:password@]host:6379/0, rediss:// for"
                              " TLS, or redis+cluster://host:port[,host:port...] for a Redis Cluster")
        try:
            kwargs: dict[str, Any] = dict(parse_url(url_for_options))
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL {where}: {exc}") from None
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ConfigError(f"invalid Redis URL {where}: the path must be a database number, as in redis://host:6379/0")
        unknown = set(kwargs) - {"connection_class"} - _accepted_options(kwargs.get("connection_class", Connection))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(sorted(unknown))} in Redis URL {where}: use redis-py connection options"
                " such as socket_timeout, socket_connect_timeout, socket_keepalive or health_check_interval"
            )
        kwargs.setdefault("socket_connect_timeout", 5.0)
        kwargs["decode_responses"] = True
        self._kwargs = kwargs
        blocking = dict(kwargs)
        blocking.pop("max_connections", None)
        blocking["socket_timeout"] = None  # feeds pass their own read timeout, longer than their BLOCK
        self._seeds = seeds
        self._bkwargs = blocking
        self._servers: Servers | None = None
        self._opened = False
        self._lock = asyncio.Lock()
        self._queues: dict[str, _Queue] = {}
        self._feeds: dict[str, Feed] = {}
        self._wakers: dict[str, Waker] = {}
        self._offers: dict[str, dict[Offer, asyncio.Future[None]]] = {}  # idle workers' offers, by queue
        self._inboxes: dict[str, Inbox] = {}
        self._token = os.urandom(8).hex()  # names this instance's inboxes
        self._early: dict[str, collections.OrderedDict[str, JobEvent]] = {}  # see _unclaimed
        self._born: dict[tuple[str, str], bool] = {}  # (queue, job id) -> added with this instance's inbox registered
        self._options: dict[int, tuple[JobOptions, bytes]] = {}
        self._scripts = _scripts()
        self._by_sha = {sha: src for sha, src in self._scripts.values()}
        self._heads = {name: _pack(("EVALSHA", sha)) for name, (sha, _) in self._scripts.items()}  # or FCALL: open()
        self._library, self._library_code = _library()
        self._functions = functions

    def __repr__(self) -> str:
        return f"<RedisBackend {_mask(self.url)}>"

    # -- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._servers is not None:
            return
        async with self._lock:
            if self._servers is not None:
                return
            servers = Servers(self._kwargs, self._bkwargs, self._seeds, _mask(self.url))
            try:
                lane = await servers.start()
                commands = [("PING",), ("INFO", "server"), ("INFO", "memory")]
                ping, server, memory = await lane.send(b"".join(_command(_pack(c)) for c in commands), len(commands))
                if isinstance(ping, Exception):
                    raise ping
                version = self._check_server(server, memory)
                await self._load_scripts(servers, version)
            except (rexc.RedisError, OSError) as exc:
                await servers.close()
                error: type[ConfigError] = ConfigError
                if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError, rexc.NoPermissionError)):
                    problem, fix = "refuses the URL's credentials or permissions", "fix the user and password"
                else:
                    problem, fix = "does not answer", "start Redis there, or fix the host, port and db"
                    error = BackendUnavailable
                raise error(
                    f"Redis at {_mask(self.url)} {problem} ({exc}): {fix} in the URL"
                    " (redis://[user:password@]host:6379/0, rediss:// for TLS, redis+cluster://host:port,host:port"
                    " for a cluster; from JOBKIT_URL or REDIS_URL)"
                ) from None
            except BaseException:
                await servers.close()
                raise
            self._opened = True
            self._servers = servers

    async def _load_scripts(self, servers: Servers, version: tuple[int, ...]) -> None:
        """Load the scripts on every master (of a cluster): as one function library where every master takes it
        (Redis 7+, `functions` not False; FCALL then skips the preamble EVAL runs at every call), else for EVALSHA."""
        lanes = servers.lanes()
        if self._functions is not False:
            refused: list[Exception | str] = ["it is older than Redis 7"]
            if version >= (7, 0):
                refused = [res for res in await asyncio.gather(*(self._load_library(each) for each in lanes)) if res]
            if not refused:
                self._heads = {name: _pack(("FCALL", f"{self._library}_{name}")) for name in self._scripts}
                return
            if self._functions:
                raise ConfigError(f"Redis at {_mask(self.url)} refused jobkit's function library ({refused[0]}); let"
                                  " it run FUNCTION LOAD (Redis 7+), or leave `functions` unset to fall back to"
                                  " EVALSHA")
            log.info("Redis at %s did not load jobkit's function library (%s); using EVALSHA", _mask(self.url),
                     refused[0])
        loads = [("SCRIPT", "LOAD", src) for _, src in self._scripts.values()]
        for each in lanes:
            for res in await each.send(b"".join(_command(_pack(c)) for c in loads), len(loads)):
                if isinstance(res, Exception):
                    raise res

    async def _load_library(self, lane: Lane) -> rexc.ResponseError | None:
        """FUNCTION LOAD of the library on `lane` (one already there is fine); the server's refusal, if any."""
        [res] = await lane.send(_command(_pack(("FUNCTION", "LOAD", self._library_code))))
        if isinstance(res, rexc.ResponseError) and "already exists" not in str(res):
            return res
        if isinstance(res, Exception) and not isinstance(res, rexc.ResponseError):
            raise res
        return None

    def _check_server(self, server: Any, memory: Any) -> tuple[int, ...]:
        """Refuse a Redis older than 6.2; warn when it may evict keys. INFO may be denied by an ACL. Returns the
        server's version (99.0 when INFO is denied)."""
        info: dict[str, str] = {}
        for text in (server, memory):
            for line in text.splitlines() if isinstance(text, str) else ():
                key, _, value = line.partition(":")
                info[key] = value
        version = tuple(int(p) for p in info.get("redis_version", "99.0").split(".")[:2] if p.isdigit())
        if version < (6, 2):
            raise ConfigError(f"Redis at {_mask(self.url)} is version {info['redis_version']}; jobkit needs Redis 6.2"
                              " or newer")
        policy = info.get("maxmemory_policy", "noeviction")
        if policy != "noeviction":
            log.warning("Redis at %s may evict keys (maxmemory-policy %s), and with them jobs; set maxmemory-policy"
                        " noeviction", _mask(self.url), policy)
        return version

    async def close(self) -> None:
        servers = self._servers
        if servers is None:
            return
        self._servers = None
        tasks: list[asyncio.Task[None]] = []
        readers: list[Reader] = [*self._feeds.values(), *self._wakers.values(), *self._inboxes.values()]
        for reader in readers:
            reader.close()
            if reader.task is not None:
                reader.task.cancel()
                tasks.append(reader.task)
        self._feeds.clear()
        self._wakers.clear()
        self._inboxes.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await servers.close()

    def _live(self) -> Servers:
        if self._servers is None:
            raise BackendError(f"the Redis backend {_mask(self.url)} is {'closed' if self._opened else 'not open'}:"
                               " call `await backend.open()` first")
        return self._servers

    # -- plumbing ----------------------------------------------------------------------------------
    def _failure(self, exc: rexc.RedisError, what: str) -> BackendError:
        where = _mask(self.url)
        if isinstance(exc, rexc.OutOfMemoryError):
            return BackendError(
                f"Redis at {where} is out of memory (maxmemory reached) and refused to {what}; nothing was written."
                " Free memory (remove finished jobs with queue.clean(...)), raise maxmemory or use a larger Redis,"
                " then retry"
            )
        if isinstance(exc, rexc.ReadOnlyError):
            return BackendError(f"Redis at {where} is a read-only replica and refused to {what}; point the URL at"
                                " the primary")
        if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError)):
            return BackendUnavailable(f"lost Redis at {where} while trying to {what} ({exc}); check that the server is"
                                      " up and reachable, then retry")
        return BackendError(f"Redis at {where} refused to {what}: {exc}")

    def _q(self, queue: str) -> _Queue:
        q = self._queues.get(queue)
        if q is None:
            q = self._queues[queue] = _Queue(queue)
        return q

    def _evalsha(self, name: str, keys: _Segment, extra_keys: Sequence[str], args: Iterable[Any],
                 packed: _Segment = (0, b"")) -> bytes:
        """EVALSHA of script `name`; `packed` are further arguments already RESP-encoded."""
        return _command(self._heads[name], _pack((keys[0] + len(extra_keys),)), keys, _pack(extra_keys), _pack(args),
                        packed)

    async def _send(self, slot: int, commands: Sequence[bytes], what: str) -> builtins.list[Any]:
        """Run packed commands on the server of hash `slot`, in one round trip."""
        servers = self._live()
        try:
            if servers.cluster:
                await servers.fresh()
            lane = servers.lane(slot)
            results = await lane.send(b"".join(commands), len(commands))
            for i, res in enumerate(results):
                if isinstance(res, rexc.ResponseError):
                    results[i] = res = await self._resend(servers, lane, slot, commands[i], res)
                if isinstance(res, Exception):
                    raise res
            return results
        except (rexc.ConnectionError, rexc.TimeoutError) as exc:
            servers.mark_stale()  # in a cluster, a failover may have moved the slot
            raise self._failure(exc, what) from exc
        except rexc.RedisError as exc:
            raise self._failure(exc, what) from exc

    async def _resend(self, servers: Servers, lane: Lane, slot: int, command: bytes, res: Exception) -> Any:
        """Follow an error reply that only asks for another try: NOSCRIPT (after SCRIPT FLUSH, a restart or a
        failover) loads the script; in a cluster, MOVED re-reads the slot map, ASK goes to the importing node once,
        TRYAGAIN and CLUSTERDOWN wait a moment. None of them ran the command, so running it again is safe."""
        for attempt in range(REDIRECTS):
            if isinstance(res, rexc.NoScriptError):
                sha = command.split(b"\r\n", 5)[4].decode()
                await lane.call(_command(_pack(("SCRIPT", "LOAD", self._by_sha[sha]))))
            elif isinstance(res, rexc.ResponseError) and str(res).startswith("Function not found"):
                refused = await self._load_library(lane)  # gone after FUNCTION FLUSH, or a restart of a diskless Redis
                if refused:
                    return refused
            elif isinstance(res, rexc.MovedError):
                await servers.refresh()
                lane = servers.lane(slot)
            elif isinstance(res, rexc.AskError):
                _, res = await servers.lane_at(res.node_addr).send(b"*1\r\n$6\r\nASKING\r\n" + command, 2)
                continue
            elif isinstance(res, (rexc.TryAgainError, rexc.ClusterDownError)):
                await asyncio.sleep(0.05 * (attempt + 1))
                servers.mark_stale()
                await servers.fresh()
                lane = servers.lane(slot)
            else:
                return res
            res = (await lane.send(command))[0]
        return res

    async def _send_spread(self, groups: Sequence[tuple[int, Sequence[bytes]]], what: str
                           ) -> builtins.list[builtins.list[Any]]:
        """Commands for several hash slots, grouped by slot: one round trip on a standalone server, one per group
        (concurrently) in a cluster. Returns each group's replies."""
        if self._live().cluster:
            return list(await asyncio.gather(*(self._send(slot, cmds, what) for slot, cmds in groups)))
        flat = await self._send(0, [c for _, cmds in groups for c in cmds], what)
        out, i = [], 0
        for _, cmds in groups:
            out.append(flat[i:i + len(cmds)])
            i += len(cmds)
        return out

    async def _eval(self, name: str, queue: str, args: Iterable[Any], what: str, ids: Sequence[str] = (),
                    data: bool = False, packed: _Segment = (0, b"")) -> Any:
        """Run a queue script; `ids` add job hash keys to KEYS (and data keys after each with `data`); `packed`
        are arguments after `args`, already RESP-encoded."""
        q = self._q(queue)
        extra = [k for i in ids for k in (q.jp + i, q.dp + i)] if data else [q.jp + i for i in ids]
        return (await self._send(q.slot, [self._evalsha(name, q.packed, extra, args, packed)], what))[0]

    def _woke(self, queue: str, span: str | None) -> None:
        """This instance made work claimable: wake its own waiters now (see Waker.mine)."""
        waker = self._wakers.get(queue)
        if waker is None or span is None:
            return
        first, _, last = span.partition(" ")
        waker.mine(_id(first), _id(last))

    def _options_json(self, options: JobOptions) -> bytes:
        hit = self._options.get(id(options))
        if hit is not None and hit[0] is options:
            return hit[1]
        text = options.model_dump_json(exclude_defaults=True).encode()
        if len(self._options) >= 256:
            self._options.clear()
        self._options[id(options)] = (options, text)
        return text

    @staticmethod
    def _extra(job: Job, watcher: str | None = None) -> bytes:
        """Hash fields for a new job's owner and tags (ow, tg: see index_job in _lib.lua), its non-default dynamic
        fields (rare: Queue builds fresh jobs), the inbox token `watcher` (see watch), and its webhook (wh: finish
        reads it, see _outbox.lua)."""
        out = {**_indexed_fields(job), **_end_fields(job, watcher)}
        if not (job.model_fields_set - _PLAIN_FIELDS):
            return json.dumps(out).encode() if out else b""
        if job.result is not None:
            out["result"] = _to_json(job.result, f"result of job {job.id}").decode()
        if job.progress != Progress():
            out["progress"] = job.progress.model_dump_json()
        if job.checkpoint is not None:
            out["checkpoint"] = _to_json(job.checkpoint, f"checkpoint of job {job.id}").decode()
        if job.stalls:
            out["stalls"] = str(job.stalls)
        if job.error is not None:
            out["err"] = json.dumps(job.error)
        if job.traceback is not None:
            out["tb"] = json.dumps(job.traceback)
        if job.worker is not None:
            out["worker"] = job.worker
        if job.cancel_requested:
            out["cr"] = "1"
        for field, key in (("lease_until", "lease"), ("started_at", "started"), ("finished_at", "finished"),
                           ("expires_at", "expires")):
            value = getattr(job, field)
            if value is not None:
                out[key] = repr(float(value))
        return json.dumps(out).encode() if out else b""

    def _records(self, jobs: Iterable[Job], watcher: str | None = None) -> bytes:
        """The jobs for add.lua, ADD_FIELDS arguments each, RESP-encoded. What a run of alike jobs shares (all
        but id and data: a bulk add's jobs) is encoded once."""
        return b"".join(self._record_parts(jobs, watcher))

    def _record_parts(self, jobs: Iterable[Job], watcher: str | None = None) -> builtins.list[bytes]:
        """`_records`, one job's arguments at a time; `watcher` is an inbox token to register on each job."""
        parts: list[bytes] = []
        shared: tuple[Any, ...] = ()  # what the last job's shared fields were computed from, if reusable
        options_json = entries = tail = b""
        for job in jobs:
            name, created_at = job.name, job.created_at
            key = (job.options, name, job.run_at, created_at, job.attempts, job.flow is None, job.owner, job.tags)
            if not (shared and key[0] is shared[0] and key[1:] == shared[1:]):
                options_json, entries, tail = self._shared_fields(job, watcher)
                shared = key if not job.history and not (job.model_fields_set - _PLAIN_FIELDS) else ()
            job_id = job.id.encode()
            if b"\0" in job_id:
                raise PayloadError(f"job ids must not contain NUL characters: {job.id!r}")
            fields = {"id": job.id, "name": name, "queue": job.queue, "data": job.data, "created_at": created_at}
            if job.parent is not None:
                fields["parent"] = {"queue": job.parent.queue, "id": job.parent.id}
            if job.owner is not None:
                fields["owner"] = job.owner
            if job.tags:
                fields["tags"] = job.tags
            static = _to_json(fields, f"payload of job {job.id} ({name})")[1:-1]
            static += b',"options":' + options_json
            data = static + entries
            sl = b"%d" % (len(static) + 12)  # 12: len(b',"history":[')
            parts.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b" % (
                len(job_id), job_id, len(data), data, len(sl), sl, tail))
        return parts

    def _shared_fields(self, job: Job, watcher: str | None = None) -> tuple[bytes, bytes, bytes]:
        """For `_records`: the job's options JSON, its history entries (after the data string's static part)
        and its fields after the first three, RESP-encoded."""
        if b"\0" in job.name.encode():
            raise PayloadError(f"task names must not contain NUL characters: {job.name!r}")
        options = job.options
        if job.flow is not None:  # a parent of a flow (or a job with depends_on) waits first
            state = b"waiting-children"
        else:
            state = b"delayed" if job.run_at > job.created_at else b"waiting"
        entry = b'{"at":%b,"state":"%b","attempt":%d,"worker":null,"note":"added"}' % (
            repr(job.created_at).encode(), state, job.attempts)
        kept = job.history[-(HISTORY_LIMIT - 1):]
        entries = b",\n".join([h.model_dump_json().encode() for h in kept] + [entry])
        kfa = options.keep_failed.age
        _, tail = _pack((
            state, options.priority, repr(job.run_at), b"%017.6f" % job.created_at, job.name, job.attempts,
            options.max_stalls, b"" if kfa is None else repr(kfa), len(kept) + 1, self._extra(job, watcher),
        ))
        return self._options_json(options), b',"history":[' + entries, tail

    # -- producer ----------------------------------------------------------------------------------
    async def add(self, jobs: Sequence[Job]) -> builtins.list[Job]:
        if not jobs:
            return []
        now_f = time.time()
        now = repr(now_f)
        groups: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.queue, []).append(i)
        sends: list[tuple[int, Sequence[bytes]]] = [(QUEUES_SLOT, [_command(_pack(("SADD", QUEUES_KEY, *groups)))])]
        records = [
            # One job alone (submit, run) is added with this instance's inbox registered: its waiter needs no
            # round trip of its own (see watch).
            self._records([jobs[i] for i in idx], self._token if len(jobs) == 1 else None) for idx in groups.values()]
        handing: dict[str, _Handing] = {}
        try:
            for (queue, idx), packed in zip(groups.items(), records, strict=True):
                q = self._q(queue)
                args = self._hand_over(queue, now_f, handing)
                sends.append((q.slot, [self._evalsha("add", q.packed, (), (now, *args),
                                                     (ADD_FIELDS * len(idx), packed))]))
            if len(jobs) < OVERLAP_ADDS:
                replies = await self._send_spread(sends, "add jobs")
                out = [_as_added(job) for job in jobs]
            else:  # send first, then build the answers while Redis runs the script
                sending = asyncio.ensure_future(self._send_spread(sends, "add jobs"))
                try:
                    await asyncio.sleep(0)
                    out = [_as_added(job) for job in jobs]
                    replies = await sending
                finally:
                    sending.cancel()
            for (queue, idx), (res,) in zip(groups.items(), replies[1:], strict=True):
                self._woke(queue, res[0])
                if queue in handing:
                    await handing.pop(queue).claimed(self, queue, res[1])
                if len(idx) <= BORN_KEPT // 10:  # a few jobs, likely watched next: see watch()
                    new = [jobs[i].id for i, item in zip(idx, res[2:], strict=True) if isinstance(item, int)]
                    self._remember_born(queue, new, len(jobs) == 1)
                for i, item in zip(idx, res[2:], strict=True):
                    if isinstance(item, int):
                        assign(out[i], seq=item)
                    else:  # the id existed: the stored job
                        out[i] = _job(item)
        finally:
            for h in handing.values():  # the add failed or was cancelled: whether it claimed is not known
                h.unknown()
        return out

    def _hand_over(self, queue: str, now: float, handing: dict[str, _Handing]) -> tuple[Any, ...]:
        """add.lua's offer arguments: an idle worker of this instance waiting on `queue` gets the jobs claimed for it
        in the add (see Offer); none (k = 0) when no such worker waits."""
        for offer, woken in self._offers.get(queue, {}).items():
            taken = offer.take()
            if taken is None:
                continue
            handing[queue] = _Handing(offer, taken, woken)
            claim = (offer.worker, repr(now + offer.lease), offer.limit, *self._rate(offer.rate_limit),
                     *_claim_filter(offer.names, offer.caps))
            return (len(claim), *claim)
        return (0,)

    async def get(self, queue: str, job_id: str) -> Job | None:
        res = await self._eval("get", queue, (), "read a job", (job_id,), data=True)
        return None if res[0] is None else _job(res[0])

    async def _get_many(self, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Job]:
        """The jobs that exist among `refs`, one script per queue (side by side on a cluster)."""
        by_queue: dict[str, list[str]] = {}
        for queue, job_id in refs:
            by_queue.setdefault(queue, []).append(job_id)
        if not by_queue:
            return {}
        sends = []
        for queue, ids in by_queue.items():
            q = self._q(queue)
            sends.append((q.slot, [self._evalsha("get", q.packed, [k for i in ids for k in (q.jp + i, q.dp + i)], ())]))
        found: dict[tuple[str, str], Job] = {}
        for (queue, ids), [res] in zip(by_queue.items(), await self._send_spread(sends, "read jobs"), strict=True):
            for job_id, text in zip(ids, res, strict=True):
                if text is not None:
                    found[queue, job_id] = _job(text)
        return found

    # -- flows (see redis_lua/_flow.lua) -------------------------------------------------------------------
    async def add_flow(self, specs: Sequence[FlowSpec]) -> builtins.list[Job | None]:
        """One flow_add script per queue and level (parents first), then one flow_seal per queue for the parents
        whose links span queues; a flow within one queue is one script, sealed in it."""
        if not specs:
            return []
        deps = {(r.queue, r.id) for spec in specs for r, owned in spec.links if not owned}
        if deps:
            found = await self._get_many(deps)
            for spec in specs:
                for r, owned in spec.links:
                    if not owned and (r.queue, r.id) not in found:
                        raise JobNotFound(f"job {spec.job.id} depends on job {r.id}, which is not in queue"
                                          f" {r.queue!r}: add that job first (nothing was queued)")
        nodes = _flow_nodes(specs)
        arms: dict[tuple[str, str], tuple[int, list[int]] | None] = {}
        reports: dict[tuple[str, str], dict[str, Any]] = {}
        stored: dict[int, Any] = {}
        now = repr(time.time())
        names = dict.fromkeys(spec.job.queue for spec in specs)
        for level in range(max(n.level for n in nodes) + 1):
            await self._flow_level(nodes, level, arms, reports, stored, now, names if level == 0 else None)
        await self._flow_seal(nodes, arms, reports, stored, now)
        out: list[Job | None] = []
        for i, spec in enumerate(specs):
            kept = stored.get(i)
            if isinstance(kept, int):
                added = _as_added(spec.job)
                assign(added, seq=kept)
                out.append(added)
            else:
                out.append(None if kept is None else _job(kept))
        return out

    async def _flow_level(self, nodes: Sequence[_Node], level: int, arms: dict[tuple[str, str], Any],
                          reports: dict[tuple[str, str], dict[str, Any]], stored: dict[int, Any], now: str,
                          names: Iterable[str] | None) -> None:
        """The flow_add scripts of one level, one per queue, side by side (with the first, the queues' names)."""
        groups: dict[str, list[_Node]] = {}
        for n in nodes:
            if n.level == level:
                groups.setdefault(n.queue, []).append(n)
        sends = [(self._q(queue).slot, [self._flow_add(queue, group, arms, now)])
                 for queue, group in groups.items()]
        if names is not None:
            sends.append((QUEUES_SLOT, [_command(_pack(("SADD", QUEUES_KEY, *names)))]))
        replies = await self._send_spread(sends, "add a flow")
        for (queue, group), [res] in zip(groups.items(), replies, strict=False):
            self._woke(queue, res[0])
            await self._deliver_notices(queue, res[1])
            for n, (kept, report, armed) in zip(group, res[2:], strict=True):
                if n.spec is not None:
                    stored[n.index] = kept
                    if n.spec.links:
                        got = None if armed is None else json.loads(armed)
                        arms[n.queue, n.id] = None if got is None else (int(got[0]), list(got[1]))
                if report is not None and n.parent is not None:
                    reports.setdefault(n.parent, {})[f"{n.queue}\n{n.id}"] = json.loads(report)

    async def _flow_seal(self, nodes: Sequence[_Node], arms: dict[tuple[str, str], Any],
                         reports: dict[tuple[str, str], dict[str, Any]], stored: dict[int, Any], now: str) -> None:
        """Seal the parents whose links span queues, one flow_seal per queue, with their children's reports."""
        seals: dict[str, list[str]] = {}
        for n in nodes:
            if n.spec is not None and n.spec.links and not n.seals_here and arms.get((n.queue, n.id)) is not None:
                seals.setdefault(n.queue, []).extend((n.id, json.dumps(reports.get((n.queue, n.id), {}))))
        if seals:
            sends = [(self._q(queue).slot, [self._evalsha("flow_seal", self._q(queue).packed, (), (now, *args))])
                     for queue, args in seals.items()]
            for (queue, args), [res] in zip(seals.items(), await self._send_spread(sends, "seal a flow"), strict=True):
                self._woke(queue, res[0])
                await self._deliver_notices(queue, res[1])
                sealed = dict(zip(args[::2], res[2:], strict=True))
                for n in nodes:
                    if n.queue == queue and n.id in sealed and n.spec is not None:
                        stored[n.index] = sealed[n.id]

    def _flow_add(self, queue: str, group: Sequence[_Node], arms: dict[tuple[str, str], tuple[int, list[int]] | None],
                  now: str) -> bytes:
        """The flow_add script for `group`, this queue's nodes of one level, in order."""
        jobs = [n.spec.job for n in group if n.spec is not None]
        records = iter(self._record_parts(jobs))
        parts = []
        for n in group:
            if n.spec is not None:
                parts.append(next(records))
            else:
                parts.append(_pack((n.id, *[""] * (ADD_FIELDS - 1)))[1])
            epoch, fe = "", ""
            if n.parent is not None and n.parent[0] != queue:  # its parent was armed by an earlier script
                armed = arms.get(n.parent)
                epoch = "-" if armed is None else str(armed[0])
                if armed is not None and n.link_index < len(armed[1]):
                    fe = str(armed[1][n.link_index])
            spec = n.spec
            flow_json = links_json = ""
            if spec is not None and spec.links:
                flow_json = (spec.job.flow or FlowStatus()).model_dump_json()
                links_json = json.dumps([[r.queue, r.id, owned] for r, owned in spec.links])
            up = "" if n.parent is None else f"{n.parent[0]}\n{n.parent[1]}"
            parts.append(_pack(("add" if spec is not None else "dep", up, epoch, fe, flow_json, links_json,
                                "1" if n.seals_here else "0"))[1])
        body = b"".join(parts)
        return self._evalsha("flow_add", self._q(queue).packed, (), (now,), (FLOW_FIELDS * len(group), body))

    async def children(self, queue: str, job_id: str, *, offset: int = 0, limit: int = 100
                       ) -> builtins.list[tuple[ChildLink, Job | None]]:
        res = await self._eval("children", queue, (job_id, max(0, offset), max(0, limit)), "read a flow's children")
        lines = []
        elsewhere = []
        for ck, entry, text in res:
            cq, _, cid = ck.partition("\n")
            state, _, owned, _ = entry.split(" ")
            lines.append((ChildLink(JobRef(queue=cq, id=cid), owned == "1", None if state == "-" else JobState(state)),
                          None if text is None else _job(text)))
            if cq != queue:
                elsewhere.append((cq, cid))
        found = await self._get_many(elsewhere)
        return [(link, job if job is not None else found.get((link.child.queue, link.child.id)))
                for link, job in lines]

    async def _deliver_notices(self, source: str, notices: Sequence[str] | None) -> None:
        """Deliver notices written to `source`'s outbox (each to its queue's flow_deliver), then remove them from
        it; then the notices those deliveries wrote, until none is left. A crash in between leaves them in the
        outbox, for `redeliver`: delivering twice changes nothing."""
        pending = [(source, text) for text in notices or ()]
        while pending:
            by_target: dict[str, list[str]] = {}
            for _, text in pending:
                by_target.setdefault(json.loads(text)["q"], []).append(text)
            now = repr(time.time())
            sends = [(self._q(t).slot, [self._evalsha("flow_deliver", self._q(t).packed, (), (now, "0", *texts))])
                     for t, texts in by_target.items()]
            replies = await self._send_spread(sends, "deliver a flow's notices")
            written: list[tuple[str, str]] = []
            for target, [res] in zip(by_target, replies, strict=True):
                self._woke(target, res[0])
                written.extend((target, text) for text in res[1] or ())
            by_source: dict[str, list[str]] = {}
            for src, text in pending:
                by_source.setdefault(src, []).append(text)
            await self._send_spread([(self._q(src).slot, [_command(_pack(("ZREM", self._q(src).outbox, *texts)))])
                                     for src, texts in by_source.items()], "acknowledge a flow's notices")
            pending = written

    async def redeliver(self, queue: str, now: float) -> int:
        q = self._q(queue)
        [due, res] = await self._send(q.slot, [
            _command(_pack(("ZRANGEBYSCORE", q.outbox, "-inf", repr(now - NOTICE_GRACE), "LIMIT", 0, 1000))),
            self._evalsha("flow_deliver", q.packed, (), (repr(now), "1")),
        ], "deliver a flow's notices")
        self._woke(queue, res[0])
        await self._deliver_notices(queue, [*due, *(res[1] or ())])
        return len(due)

    async def list(
        self,
        queue: str,
        *,
        states: Collection[JobState] | None = None,
        name: str | None = None,
        worker: str | None = None,
        owner: str | None = None,
        tag: tuple[str, str] | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> builtins.list[Job]:
        wanted = [JobState(s).value for s in states] if states is not None else list(STATES)
        if worker is not None:  # only ACTIVE jobs have an worker
            wanted = [s for s in wanted if s == "active"]
        out: list[Job] = []
        cursor, skip = "", max(0, offset)
        while wanted and len(out) < limit:
            res = await self._eval("list", queue, (
                skip, limit - len(out), "0" if name is None else "1", name or "", "0" if worker is None else "1",
                worker or "", cursor, LIST_BUDGET, owner or "", "" if tag is None else f"{tag[0]}={tag[1]}", *wanted,
            ), "list jobs")
            out.extend(_job(s) for s in res[2:])
            cursor, skip = res[0], int(res[1])
            if not cursor:
                break
        return out

    async def counts(self, queue: str) -> QueueCounts:
        return self._counts(await self._eval("counts", queue, (), "count jobs"))

    @staticmethod
    def _counts(res: Sequence[int]) -> QueueCounts:
        return QueueCounts(waiting=res[0], delayed=res[1], active=res[2], completed=res[3], failed=res[4],
                           cancelled=res[5], paused=bool(res[6]), **{"waiting-children": res[7]})

    async def queues(self) -> builtins.list[str]:
        [names] = await self._send(QUEUES_SLOT, [_command(_pack(("SMEMBERS", QUEUES_KEY)))], "list queues")
        names = sorted(names)
        if not names:
            return []
        results = await self._send_spread(
            [(self._q(n).slot, [self._evalsha("counts", self._q(n).packed, (), ())]) for n in names], "count jobs")
        return [n for n, res in zip(names, results, strict=True) if any(res[0])]

    async def cancel(self, queue: str, job_id: str, now: float) -> Job | None:
        res = await self._eval("cancel", queue, (job_id, repr(now)), "cancel a job", (job_id,), data=True)
        self._woke(queue, res[2])
        await self._deliver_notices(queue, res[1])
        return None if res[0] is None else _job(res[0])

    async def set_paused(self, queue: str, paused: bool) -> None:
        q = self._q(queue)
        results = await self._send_spread([
            (QUEUES_SLOT, [_command(_pack(("SADD", QUEUES_KEY, queue)))]),
            (q.slot, [self._evalsha("pause", q.packed, (), ("1" if paused else "0", repr(time.time())))]),
        ], "pause a queue" if paused else "resume a queue")
        self._woke(queue, results[1][0])

    async def set_global_concurrency(self, queue: str, limit: int | None) -> None:
        await self._eval("concurrency", queue, ("" if limit is None else limit,), "set the global concurrency")

    async def global_concurrency(self, queue: str) -> int | None:
        found = await self._eval("concurrency", queue, (), "read the global concurrency")
        return None if found is None else int(found)

    async def retry(self, queue: str, job_ids: Sequence[str] | None, now: float, limit: int = 1000) -> int:
        if job_ids is None:
            res = await self._eval("retry", queue, (repr(now), limit, "all"), "retry jobs")
        elif not job_ids:
            return 0
        else:
            res = await self._eval("retry", queue, (repr(now), limit, "ids", *job_ids), "retry jobs", job_ids,
                                   data=True)
        self._woke(queue, res[1])
        return int(res[0])

    async def clean(
        self,
        queue: str,
        state: JobState,
        *,
        finished_before: float | None = None,
        keep_last: int | None = None,
        expired_at: float | None = None,
        limit: int = 1000,
    ) -> int:
        state = JobState(state)
        if state not in TERMINAL_STATES or limit <= 0:
            return 0
        args = (state.value, "" if finished_before is None else repr(finished_before),
                "" if keep_last is None else max(0, keep_last), "" if expired_at is None else repr(expired_at),
                limit, repr(time.time()))
        return int(await self._eval("clean", queue, args, "remove finished jobs"))

    # -- worker ------------------------------------------------------------------------------------
    async def claim(
        self,
        queue: str,
        worker: str,
        *,
        limit: int,
        lease: float,
        now: float,
        names: Collection[str] | None = None,
        rate_limit: RateLimit | None = None,
        caps: Mapping[str, int] | None = None,
    ) -> ClaimResult:
        args: list[Any] = [repr(now), repr(now + lease), worker, limit, *self._rate(rate_limit),
                           *_claim_filter(names, caps)]
        res = await self._eval("claim", queue, args, "claim jobs")
        return ClaimResult(await self._claimed(queue, worker, res[2:]), float(res[0]) if res[0] else None,
                           res[1] == 1)

    async def _claimed(self, queue: str, worker: str, records: Sequence[str]) -> builtins.list[Job]:
        """The claimed jobs; one whose record cannot be read fails alone (`_quarantine`), not the claim."""
        try:
            return [_job(s) for s in records]
        except ValidationError:
            pass
        jobs = []
        for record in records:
            try:
                jobs.append(_job(record))
            except ValidationError as exc:
                await self._quarantine(queue, worker, record, exc)
        return jobs

    async def _quarantine(self, queue: str, worker: str, record: str, exc: ValidationError) -> None:
        """Fail a claimed job whose record cannot be read, resetting what made it unreadable (quarantine.lua)."""
        found = _RECORD_ID.match(record)
        error = unreadable_error(exc)
        if found is None:  # not a record jobkit wrote: its lease will expire, and recovery fail it past max_stalls
            log.error("a job claimed in %s cannot be read and has no readable id (%s): %.200s", queue, error, record)
            return
        job_id = json.loads(found.group(1))
        log.error("job %s in %s: %s", job_id, queue, error)
        now = time.time()
        options = any(e["loc"][:1] == ("options",) for e in exc.errors(include_url=False))
        age = DEFAULT_KEEP_FAILED.age
        res = await self._eval("quarantine", queue, (
            worker, repr(now), json.dumps(error), json.dumps(f"the stored record, as read:\n{record}"),
            "" if age is None else repr(now + age), "1" if options else "0", json.dumps(error[:200]),
        ), "fail a job that cannot be read", (job_id,), data=True)
        await self._deliver_notices(queue, res[1])

    @staticmethod
    def _rate(rate_limit: RateLimit | None) -> tuple[Any, Any]:
        return ("", "") if rate_limit is None else (rate_limit.limit, repr(rate_limit.per))

    async def finish_and_claim(
        self,
        queue: str,
        worker: str,
        outcomes: Sequence[Outcome],
        *,
        limit: int,
        lease: float,
        now: float,
        names: Collection[str] | None = None,
        rate_limit: RateLimit | None = None,
        keep_completed: int | None = None,
        caps: Mapping[str, int] | None = None,
        keep_failed: int | None = None,
    ) -> ClaimResult:
        """One script, one round trip: finish `outcomes`, then claim up to `limit` jobs."""
        now_s = repr(now)
        args: list[Any] = [worker, now_s, repr(now + lease), limit, *self._rate(rate_limit), len(outcomes),
                           _keep(keep_completed, keep_failed), self._token]
        packed = self._outcomes(outcomes)
        extra = _pack(_claim_filter(names, caps))
        packed = (packed[0] + extra[0], packed[1] + extra[1])
        res = await self._eval("finish_claim", queue, args, "finish and claim jobs", [oc.job_id for oc in outcomes],
                               data=True, packed=packed)
        self._woke(queue, res[0])
        self._ended_here(queue, res[4])
        await self._deliver_notices(queue, res[3])
        return ClaimResult(await self._claimed(queue, worker, res[5:]), float(res[1]) if res[1] else None,
                           res[2] == 1)

    def _ended_here(self, queue: str, ends: Sequence[str] | None) -> None:
        """The ends a finish answered for this instance's waiters (its token in the job's field wt: a watch, or an add
        here), delivered as if read from its inbox; those nobody waits for yet are kept for their watch."""
        if not ends:
            return
        inbox = self._inboxes.get(queue) or Inbox(queue, "", self._unclaimed(queue))  # none read: keep them
        for packed in ends:
            inbox.deliver_one(packed)

    def _inbox(self, queue: str) -> Inbox:
        """This instance's inbox reader of `queue`, started if it is not running."""
        return self._inboxes.get(queue) or self._start(
            self._inboxes, Inbox(queue, self._q(queue).inbox(self._token), self._unclaimed(queue)))

    def _unclaimed(self, queue: str) -> collections.OrderedDict[str, JobEvent]:
        """The ends of `queue`'s jobs that came before their watch (see Inbox.deliver_one), kept across readers."""
        return self._early.setdefault(queue, collections.OrderedDict())

    @staticmethod
    def _outcomes(outcomes: Sequence[Outcome]) -> _Segment:
        """Outcomes for _finish.lua, OUTCOME_FIELDS arguments each, RESP-encoded."""
        parts = []
        for oc in outcomes:
            job_id = oc.job_id.encode()
            run_at = repr(oc.run_at).encode()
            expires = b"" if oc.expires_at is None else repr(oc.expires_at).encode()
            if oc.state is JobState.COMPLETED:
                result = _to_json(oc.result, f"result of job {oc.job_id}")
                parts.append(
                    b'$%d\r\n%b\r\n$9\r\ncompleted\r\n$%d\r\n%b\r\n$4\r\nnull\r\n$4\r\nnull\r\n$%d\r\n%b\r\n'
                    b'$%d\r\n%b\r\n$2\r\n""\r\n' % (
                        len(job_id), job_id, len(result), result, len(run_at), run_at, len(expires), expires))
            else:
                parts.append(_pack((
                    job_id, oc.state.value, b"" if oc.started else b"u", json.dumps(oc.error),
                    json.dumps(oc.traceback), run_at, expires,
                    json.dumps((oc.error or "")[:200]),
                ))[1])
        return OUTCOME_FIELDS * len(outcomes), b"".join(parts)

    async def renew(self, queue: str, worker: str, job_ids: Sequence[str], lease: float, now: float) -> dict[str, bool]:
        if not job_ids:
            return {}
        res = await self._eval("renew", queue, (worker, repr(now + lease), *job_ids), "renew leases", job_ids)
        return {jid: code == 1 for jid, code in zip(job_ids, res, strict=True) if code >= 0}

    async def finish(
        self, queue: str, worker: str, outcomes: Sequence[Outcome], now: float, *, keep_completed: int | None = None,
        keep_failed: int | None = None,
    ) -> builtins.list[Job]:
        if not outcomes:
            return []
        res = await self._eval("finish", queue, (worker, repr(now), _keep(keep_completed, keep_failed),
                                                 self._token), "finish jobs",
                               [oc.job_id for oc in outcomes], data=True, packed=self._outcomes(outcomes))
        self._woke(queue, res[0])
        self._ended_here(queue, res[2])
        await self._deliver_notices(queue, res[1])
        return [_job(s) for s in res[3:]]

    async def metrics(self, queue: str, since: float) -> builtins.list[MetricRow]:
        res = await self._eval("metrics", queue, (int(since // 60),), "read metrics")
        rows: builtins.list[MetricRow] = []
        for minute, fields in zip(res[::2], res[1::2], strict=True):
            for key, n in zip(fields[::2], fields[1::2], strict=True):
                name, _, field = key.rpartition("\0")
                if name:  # not the minute's total (field "#")
                    rows.append((int(minute), name, field, int(n)))
        return rows

    async def set_progress(self, queue: str, worker: str, job_id: str, progress: Progress) -> bool:
        res = await self._eval("progress", queue, (worker, job_id, progress.model_dump_json(), repr(time.time())),
                               "store progress", (job_id,))
        return bool(res)

    async def set_checkpoint(self, queue: str, worker: str, job_id: str, checkpoint: Any) -> bool:
        text = _to_json(checkpoint, f"checkpoint of job {job_id}")
        return bool(await self._eval("checkpoint", queue, (worker, text), "store a checkpoint", (job_id,)))

    async def recover(self, queue: str, now: float) -> builtins.list[Job]:
        res = await self._eval("recover", queue, (repr(now),), "recover expired leases")
        self._woke(queue, res[0])
        await self._deliver_notices(queue, res[1])
        return [_job(s) for s in res[2:]]

    def on_work(self, queue: str, timeout: float, woken: asyncio.Future[None], offer: Offer | None = None
                ) -> Callable[[], None] | None:
        waker = self._wakers.get(queue) if self._servers is not None else None
        if waker is None:
            return None  # the first wait starts the wake stream's reader (wait_for_work)
        disarm = waker.arm(woken, timeout)
        if offer is None or woken.done():
            return disarm
        offers = self._offers.setdefault(queue, {})
        offers[offer] = woken

        def stop() -> None:
            disarm()
            offers.pop(offer, None)

        return stop

    async def wait_for_work(self, queue: str, timeout: float, offer: Offer | None = None) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        stop = self.on_work(queue, timeout, woken, offer)
        if stop is None:
            await self._watch_wakes(queue)
            return
        try:
            await woken
        finally:
            stop()

    async def _watch_wakes(self, queue: str) -> None:
        """Start reading `queue`'s wake stream from its end, so a wake after this call is not lost."""
        if self._servers is None:
            return
        q = self._q(queue)
        [last] = await self._send(q.slot, [self._last_command(q.wake)], "read the wake stream")
        self._live()
        if queue not in self._wakers:
            self._start(self._wakers, Waker(queue, q.wake, self._last_id(last)))

    # -- events ------------------------------------------------------------------------------------
    async def subscribe(self, queue: str, *, since: str | None = None) -> AsyncIterator[JobEvent]:
        last = await self._last_event(queue)
        self._live()  # still open after the await
        feed = self._feeds.get(queue) or self._start(self._feeds, Feed(queue, self._q(queue).events, last))
        return self._listen(feed, last, None if since is None else _since(since))

    def _remember_born(self, queue: str, job_ids: Sequence[str], registered: bool) -> None:
        """These jobs were added by this instance (`registered`: with its inbox token in their field wt)."""
        born = self._born
        for job_id in job_ids:
            born[queue, job_id] = registered
        while len(born) > BORN_KEPT:
            del born[next(iter(born))]

    async def watch(
        self, queue: str, job_id: str, known: Job | None = None
    ) -> tuple[AsyncIterator[JobEvent], Job | None]:
        # Not the queue's event stream: watch.lua registers this instance's inbox on the job, and the script that
        # ends the job pushes its end there. A job this instance added needs no read unless it has ended already.
        self._live()
        inbox = self._inbox(queue)
        ending = Ending(inbox, job_id)
        born = self._born.pop((queue, job_id), None)
        mine = born is not None and known is not None and not known.finished
        if mine and born:
            return ending, known  # registered when added: its end will be pushed to the inbox
        q = self._q(queue)
        try:
            [res] = await self._send(q.slot, [self._evalsha("watch", q.packed, (q.jp + job_id, q.dp + job_id),
                                                            (self._token, "1" if mine else ""))], "watch a job")
        except BaseException:
            ending.close()
            raise
        if res == 1:
            return ending, known
        return ending, None if res is None else _job(res)

    def _listen(self, feed: Feed, pos: str, start: _EventId | None = None) -> _Subscription:
        """A subscription to events after `start` (default `pos`, an id the stream had reached): the feed
        delivers those after feed.pos; those up to max(pos, feed.pos) come from the feed's kept entries, else
        from XRANGE."""
        inbox: asyncio.Queue[Item] = asyncio.Queue()
        feed.subs.add(inbox)
        start = _id(pos) if start is None else start
        upto = max(_id(pos), _id(feed.pos))
        kept = feed.replay(start) if start < upto and upto == _id(feed.pos) else None
        if kept is None:
            return _Subscription(self, feed, inbox, start, upto)
        return _Subscription(self, feed, inbox, upto, upto, kept)

    @staticmethod
    def _last_command(stream: str) -> bytes:
        return _command(_pack(("XREVRANGE", stream, "+", "-", "COUNT", 1)))

    @staticmethod
    def _last_id(reply: Any) -> str:
        return str(reply[0][0]) if reply else "0-0"

    async def _last_event(self, queue: str) -> str:
        q = self._q(queue)
        [last] = await self._send(q.slot, [self._last_command(q.events)], "read the event stream")
        return self._last_id(last)

    def _start(self, registry: dict[str, _R], reader: _R) -> _R:
        """Register `reader` (a Feed, Waker or Inbox) for its queue and start its loop."""
        registry[reader.queue] = reader
        slot = self._q(reader.queue).slot
        reader.task = asyncio.get_running_loop().create_task(pump(reader, slot, lambda: self._servers, registry))
        return reader

    async def _range(
        self, feed: Feed, after: _EventId, upto: _EventId
    ) -> tuple[builtins.list[tuple[_EventId, JobEvent]], _EventId]:
        """Retained events in (after, upto], at most 500 at a time, and the id read up to."""
        [entries] = await self._send(self._q(feed.queue).slot, [_command(_pack(
            ("XRANGE", feed.key, f"({after[0]}-{after[1]}", f"{upto[0]}-{upto[1]}", "COUNT", 500)))],
            "read past events")
        events = [(_id(eid), _event(feed.queue, eid, flat)) for eid, flat in entries if flat[1] != "resumed"]
        return events, (_id(entries[-1][0]) if entries else upto)

    # -- workers -----------------------------------------------------------------------------------
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        await self._send(WORKERS_SLOT, [self._evalsha("heartbeat", _pack(WORKER_KEYS), (), (
            info.id, info.model_dump_json(), repr(info.seen_at + ttl), repr(info.seen_at - FORGET_WORKERS_AFTER),
        ))], "record a worker heartbeat")

    async def forget_worker(self, worker_id: str) -> None:
        await self._send(WORKERS_SLOT, [_command(_pack(("HDEL", WORKER_KEYS[0], worker_id))),
                          _command(_pack(("ZREM", WORKER_KEYS[1], worker_id)))], "forget a worker")

    async def workers(self, now: float, queue: str | None = None) -> builtins.list[WorkerInfo]:
        [res] = await self._send(WORKERS_SLOT, [self._evalsha("workers", _pack(WORKER_KEYS), (), (repr(now),))],
                                 "list workers")
        infos = [WorkerInfo.model_validate_json(s) for s in res]
        return [w for w in infos if queue is None or queue in w.queues]

    # -- webhooks' outbox ----------------------------------------------------------------------------
    @staticmethod
    def _delivery(queue: str, delivery_id: Any, fixed: Any, status: Any) -> WebhookDelivery:
        """A delivery from its two stored parts (see redis_lua/_outbox.lua)."""
        found = {**json.loads(fixed), **json.loads(status)}
        history = found.get("history")  # attempts as JSON texts; cjson writes an empty array as {}
        found["history"] = [json.loads(h) for h in history] if isinstance(history, list) else []
        found["job"]["queue"] = queue
        ident = delivery_id.decode() if isinstance(delivery_id, bytes) else str(delivery_id)
        return WebhookDelivery.model_validate({**found, "id": ident, "queue": queue})

    async def webhook_queues(self) -> builtins.list[str]:
        # Every queue that ever had a job is in QUEUES_KEY (add puts it there), so every queue with an outbox is too.
        [names] = await self._send(QUEUES_SLOT, [_command(_pack(("SMEMBERS", QUEUES_KEY)))], "list queues")
        names = sorted(n.decode() if isinstance(n, bytes) else n for n in names)
        if not names:
            return []
        sizes = await self._send_spread([(self._q(n).slot, [_command(_pack(("ZCARD", self._q(n).keys[27])))])
                                         for n in names], "count webhook deliveries")
        return [n for n, [size] in zip(names, sizes, strict=True) if size]

    async def claim_webhooks(self, queue: str, sender: str, *, limit: int, lease: float, now: float
                             ) -> builtins.list[WebhookDelivery]:
        res = await self._eval("webhook_claim", queue, (sender, repr(now), repr(now + lease), limit),
                               "claim webhook deliveries")
        return [self._delivery(queue, n, fixed, status) for n, fixed, status in res]

    async def settle_webhook(self, queue: str, sender: str, delivery_id: str, attempt: DeliveryAttempt,
                             next_at: float | None, now: float) -> bool:
        args = (sender, delivery_id, attempt.model_dump_json(), "1" if attempt.ok else "0",
                "" if next_at is None else repr(next_at), repr(now))
        return bool(await self._eval("webhook_settle", queue, args, "record a webhook attempt"))

    async def webhook_deliveries(self, queue: str, *, state: DeliveryState | None = None, job_id: str | None = None,
                                 limit: int = 100) -> builtins.list[WebhookDelivery]:
        q = self._q(queue)
        fixed, status = await self._send(q.slot, [_command(_pack(("HGETALL", q.keys[25]))),
                                                  _command(_pack(("HGETALL", q.keys[26])))], "list webhook deliveries")
        fixed, status = (dict(zip(x[::2], x[1::2], strict=True)) if isinstance(x, list) else dict(x)
                         for x in (fixed, status))
        found = [self._delivery(queue, n, fixed[n], status[n]) for n in sorted(fixed, key=int, reverse=True)
                 if n in status]
        return [d for d in found if (state is None or d.state == state) and (job_id is None or d.job_id == job_id)
                ][:limit]

    async def replay_webhook(self, queue: str, delivery_id: str, now: float) -> WebhookDelivery | None:
        res = await self._eval("webhook_replay", queue, (delivery_id, repr(now)), "replay a webhook delivery")
        return None if not res else self._delivery(queue, delivery_id, res[0], res[1])

    # -- records -----------------------------------------------------------------------------------
    def _record_key(self, queue: str, kind: str) -> tuple[str, int]:
        key = f"jobkit:{{{queue}}}:rec:{kind}"
        return key, self._q(queue).slot

    @staticmethod
    def _record_index(queue: str, kind: str) -> tuple[int, Sequence[bytes]]:
        """SADD of `queue` to the set of queues that have held records of `kind` (see record_queues)."""
        key = f"jobkit:records:{kind}"
        return key_slot(key.encode()), [_command(_pack(("SADD", key, queue)))]

    async def record_queues(self, kind: str) -> builtins.list[str]:
        # The index only grows (a write adds its queue, in the same round trip); a queue whose records were
        # all removed is left out here, by the length of its hash.
        key = f"jobkit:records:{kind}"
        [names] = await self._send(key_slot(key.encode()), [_command(_pack(("SMEMBERS", key)))], "list queues")
        names = sorted(n.decode() if isinstance(n, bytes) else n for n in names)
        if not names:
            return []
        keys = [self._record_key(n, kind) for n in names]
        lengths = await self._send_spread([(slot, [_command(_pack(("HLEN", k)))]) for k, slot in keys],
                                          "count records")
        return [n for n, [length] in zip(names, lengths, strict=True) if length]

    @staticmethod
    def _record(key: str, field: str) -> Record:
        version, _, value = field.partition(":")
        return Record(key, value, int(version))

    async def read_record(self, queue: str, kind: str, key: str) -> Record | None:
        hkey, slot = self._record_key(queue, kind)
        [res] = await self._send(slot, [_command(_pack(("HGET", hkey, key)))], "read a record")
        return None if res is None else self._record(key, res)

    async def list_records(self, queue: str, kind: str) -> builtins.list[Record]:
        hkey, slot = self._record_key(queue, kind)
        [res] = await self._send(slot, [_command(_pack(("HGETALL", hkey)))], "list records")
        pairs = dict(zip(res[::2], res[1::2], strict=True)) if isinstance(res, list) else dict(res)
        return [self._record(k, pairs[k]) for k in sorted(pairs)]

    async def write_record(
        self, queue: str, kind: str, key: str, value: str | None, *, version: int | None = None,
        add: Sequence[Job] = (),
    ) -> int | None:
        hkey, slot = self._record_key(queue, kind)
        expected = "" if version is None else version
        if not add:
            args = (key, value or "", expected, "1" if value is None else "0")
            sends: list[tuple[int, Sequence[bytes]]] = [(slot, [self._evalsha("record", _pack((hkey,)), (), args)])]
            if value is not None:
                sends.append(self._record_index(queue, kind))
            [res], *_ = await self._send_spread(sends, "write a record")
            return None if res < 0 else int(res)
        check_record_add(queue, value, version, add)
        q = self._q(queue)
        script = self._evalsha("record_add", q.packed, (hkey,), (key, expected, value, repr(time.time()), 0),
                               (ADD_FIELDS * len(add), self._records(add)))
        _, _, [res] = await self._send_spread([(QUEUES_SLOT, [_command(_pack(("SADD", QUEUES_KEY, queue)))]),
                                               self._record_index(queue, kind), (slot, [script])],
                                              "write a record and add jobs")
        if res == -1:
            return None
        self._woke(queue, res[0])
        return cast(int, version) + 1

    # -- counters and budgets ------------------------------------------------------------------------
    def _window_keys(self, queue: str, key: str) -> tuple[str, str]:
        return f"jobkit:{{{queue}}}:w:{key}", f"jobkit:{{{queue}}}:wt:{key}"

    async def take(self, queue: str, asks: Sequence[Ask], now: float) -> float:
        check_asks(asks)
        keys = [k for a in asks for k in self._window_keys(queue, a.key)]
        args = [repr(now), *(repr(float(v)) for a in asks for v in (a.amount, a.limit, a.window))]
        [res] = await self._send(self._q(queue).slot, [self._evalsha("take", _pack(keys), (), args)], "take a quota")
        return float(res)

    async def restrict(self, queue: str, key: str, remaining: float, limit: float, until: float, now: float) -> None:
        keys = self._window_keys(queue, key)
        args = (repr(now), repr(float(remaining)), repr(float(limit)), repr(until))
        await self._send(self._q(queue).slot, [self._evalsha("restrict", _pack(keys), (), args)], "restrict a quota")

    async def _budget(self, queue: str, key: str, args: Sequence[str], what: str) -> tuple[bool, Spend]:
        hkey = f"jobkit:{{{queue}}}:b:{key}"
        [(ok, spent, reserved)] = await self._send(self._q(queue).slot,
                                                   [self._evalsha("budget", _pack((hkey,)), (), args)], what)
        return bool(ok), Spend(float(spent), float(reserved))

    async def reserve(self, queue: str, key: str, amount: float, limit: float | None) -> tuple[bool, Spend]:
        limit_arg = "" if limit is None else repr(float(limit))
        return await self._budget(queue, key, ("reserve", repr(float(amount)), limit_arg), "reserve from a budget")

    async def settle(self, queue: str, key: str, reserved: float, actual: float) -> Spend:
        return (await self._budget(queue, key, ("settle", repr(float(reserved)), repr(float(actual))),
                                   "settle a budget"))[1]

    async def drop_budget(self, queue: str, key: str) -> Spend:
        return (await self._budget(queue, key, ("drop",), "drop a budget"))[1]
