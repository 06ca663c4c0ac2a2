"""The one narrow interface every backend implements: atomic job-state transitions, events and heartbeats.

Rules every implementation keeps (the contract suite in tests/contract checks them):

- Each method that changes state is atomic (memory: one critical section; SQLite: one
  BEGIN IMMEDIATE transaction; Redis: one Lua script) and publishes one JobEvent per job it moves.
- Policy (when to retry, backoff delays, retention ages, timeouts) is decided above, by the worker
  and the queue; a backend only stores what it is told and applies the arithmetic it is given.
- Jobs are ordered for claiming by (priority, seq): lower priority number first, FIFO within one.
- `now` is `time.time()` on the caller's clock.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from ..deliveries import DeliveryAttempt, DeliveryState, WebhookDelivery
from ..models import Job, JobEvent, JobRef, JobState, Outcome, Progress, QueueCounts, RateLimit, WorkerInfo
from ._metrics import MetricRow

__all__ = [
    "CONCURRENCY_RECHECK", "Ask", "Backend", "ChildLink", "ClaimResult", "FlowSpec", "Offer", "Record", "Spend",
    "check_asks",
    "check_record_add",
]

# Seconds after which a claim that a queue's global concurrency held back says to ask again (`retry_in`): a slot
# frees when any worker, in any process, finishes a job, and no wake-up says so.
CONCURRENCY_RECHECK = 0.05


class ClaimResult:
    """Jobs handed to a worker by `claim`, and how soon it is worth asking again.

    `dry` (a backend may leave it False): fewer jobs were ready than the claim allowed, so nothing more is
    claimable before `retry_in` or a wake of `wait_for_work`; the worker then waits instead of asking again.
    """

    __slots__ = ("dry", "jobs", "retry_in")

    def __init__(self, jobs: list[Job], retry_in: float | None = None, dry: bool = False) -> None:
        self.jobs = jobs
        self.retry_in = retry_in  # seconds until a delayed job is due or the rate window reopens
        self.dry = dry

    def __repr__(self) -> str:
        return f"ClaimResult({len(self.jobs)} jobs, retry_in={self.retry_in}, dry={self.dry})"


class Offer:
    """A waiting worker's free slots, lent to a backend that can claim for it (`Backend.takes_offers`): while the
    worker waits in `wait_for_work`, the call that adds jobs to its queue may claim them for it in the same step, so
    a job handed over so needs no claim (and no round trip) of its own. The arguments are those of `claim`."""

    __slots__ = ("_taken", "caps", "lease", "limit", "names", "open", "rate_limit", "worker")

    def __init__(self, worker: str, *, limit: int, lease: float, names: Collection[str] | None = None,
                 rate_limit: RateLimit | None = None, caps: Mapping[str, int] | None = None) -> None:
        self.worker, self.limit, self.lease, self.names = worker, limit, lease, names
        self.rate_limit, self.caps = rate_limit, caps
        self.open = True
        self._taken: asyncio.Future[ClaimResult] | None = None

    def take(self) -> asyncio.Future[ClaimResult] | None:
        """For the backend: claim for this worker now, and settle the returned future with what was claimed (or
        the error that left it unknown). None when the offer is closed or already taken."""
        if not self.open:
            return None
        self.open = False
        self._taken = asyncio.get_running_loop().create_future()
        return self._taken

    def close(self) -> asyncio.Future[ClaimResult] | None:
        """For the worker, once it stops waiting: no claim for it may start any more. Returns the claim already under
        way, if any: its jobs are this worker's, to await and start."""
        self.open = False
        return self._taken


class Record(NamedTuple):
    """A small JSON document a queue keeps under a key (a schedule, say), with a version for compare-and-swap."""

    key: str
    value: str
    version: int


class Ask(NamedTuple):
    """An amount asked of a sliding-window counter: at most `limit` granted under `key` in any `window` seconds."""

    key: str
    amount: float
    limit: float
    window: float


class Spend(NamedTuple):
    """A budget's totals: what was spent (settled), and what open reservations hold."""

    spent: float
    reserved: float


def check_asks(asks: Sequence[Ask]) -> None:
    """`take` asks finite amounts of distinct keys, none more than its limit (it could never be granted)."""
    if len({a.key for a in asks}) != len(asks):
        raise ValueError("take asks each counter once: merge the asks of one key")
    for a in asks:
        if not (0 <= a.amount <= a.limit < float("inf") and 0 < a.window < float("inf")):
            raise ValueError(f"ask {a!r}: amount from 0 to limit, a finite limit and a window of more than 0 seconds")
class FlowSpec(NamedTuple):
    """One job of a flow for `add_flow`: the job (its `parent` set when it is a child; its `flow` holding the policy
    when it waits), and what it waits for, in order: (job, owned) pairs, its children (owned) and the existing jobs
    it depends on (not owned)."""

    job: Job
    links: tuple[tuple[JobRef, bool], ...] = ()


class ChildLink(NamedTuple):
    """One line of a parent's ledger: the child or dependency, whether the flow made it (owned), and the state the
    parent counted for it (None while it has not ended)."""

    child: JobRef
    owned: bool
    state: JobState | None


def check_record_add(queue: str, value: str | None, version: int | None, add: Sequence[Job]) -> None:
    """`write_record` adds jobs of its own queue, with a value written at a known version (see there)."""
    if add and (value is None or version is None or any(job.queue != queue for job in add)):
        raise ValueError("write_record adds jobs only of its own queue, with a value and an expected version")


class Backend(abc.ABC):
    """Storage of jobs for any number of queues, shared by producers and workers."""

    url: str
    #: True when jobs may run in an embedded worker in the caller's process (memory, SQLite).
    is_local: bool = False
    #: True when a second claim sent while one is under way gets served meanwhile (a network server), so a
    #: worker with a backlog keeps two under way; False where claims run one at a time anyway.
    claims_overlap: bool = False
    #: True when `wait_for_work` lends a waiting worker's `Offer` to the calls that add jobs (see Offer).
    takes_offers: bool = False

    # -- lifecycle -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create what storage needs; idempotent. Raises ConfigError if unusable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; idempotent. Subscriptions end."""

    async def __aenter__(self) -> Backend:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- producer --------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add(self, jobs: Sequence[Job]) -> builtins.list[Job]:
        """Store new jobs in one transaction; return the stored jobs in order.

        A job whose id already exists in its queue is left as it is and the stored job is returned
        (idempotent add). New jobs get `seq`; `state` is DELAYED when `run_at > now`, else WAITING.
        Event "added" (or "delayed") for each new job.
        """

    @abc.abstractmethod
    async def add_flow(self, specs: Sequence[FlowSpec]) -> builtins.list[Job | None]:
        """Add a flow (parents before their children in `specs`), or run it again; idempotent on job ids.

        A new job with links waits in WAITING_CHILDREN; its `flow` counts its links as they end, and its policy
        moves it on (see _flows.py: fail_fast, wait_all, continue_partial). Each link holds its job back from
        retention until the parent ends. An existing parent that failed, was cancelled, or completed with a link
        that did not is armed again: its failed or cancelled children run again, missing ones are added, completed
        ones stay. Other existing jobs stay as they are (a child of a parent that was not armed is not added:
        None in its place). JobNotFound if a dependency does not exist, and then nothing is written.
        Atomic on memory and SQLite, and on Redis for a flow within one queue; on Redis across queues, one script
        per queue and level, then one that seals the parents (see docs/flows.md). Returns the stored jobs."""

    @abc.abstractmethod
    async def children(self, queue: str, job_id: str, *, offset: int = 0, limit: int = 100
                       ) -> builtins.list[tuple[ChildLink, Job | None]]:
        """A page of a parent's ledger, in the order its children were given, each with its job as it is now
        (None once removed)."""

    async def redeliver(self, queue: str, now: float) -> int:
        """Deliver what this queue's jobs owe to parents on other queues and is still undelivered (a worker died
        between the two steps; only where one step cannot do both: Redis). Returns how many were delivered."""
        return 0

    @abc.abstractmethod
    async def get(self, queue: str, job_id: str) -> Job | None:
        """The job, or None if there is none (never was, or removed)."""

    @abc.abstractmethod
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
        """Jobs matching every filter given, newest first (by created_at, then seq), paged. `worker`: the worker
        holding the lease; `owner`: the user the job is for; `tag`: a (key, value) among its tags. Owner and tag
        filters use the backend's indexes, so a page costs the same however many jobs others own."""

    @abc.abstractmethod
    async def counts(self, queue: str) -> QueueCounts:
        """Number of jobs in each state, and the paused flag."""

    @abc.abstractmethod
    async def queues(self) -> builtins.list[str]:
        """Names of every queue that holds jobs or was paused, sorted."""

    @abc.abstractmethod
    async def cancel(self, queue: str, job_id: str, now: float) -> Job | None:
        """Cancel a job: WAITING/DELAYED → CANCELLED at once (event "cancelled"); ACTIVE → stays
        ACTIVE with `cancel_requested` set (event "cancel-requested"), and its worker finishes it;
        a finished job is left alone. Returns the job as it now is, or None if unknown."""

    @abc.abstractmethod
    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (claim hands out nothing from this queue) or resume it."""

    @abc.abstractmethod
    async def set_global_concurrency(self, queue: str, limit: int | None) -> None:
        """At most `limit` (1 or more) jobs of `queue` ACTIVE at once across every worker, enforced by `claim`;
        None lifts it. Jobs already active beyond a new limit run on; no more start until they are under it."""

    @abc.abstractmethod
    async def global_concurrency(self, queue: str) -> int | None:
        """The limit `set_global_concurrency` set, or None."""

    @abc.abstractmethod
    async def retry(self, queue: str, job_ids: Sequence[str] | None, now: float, limit: int = 1000) -> int:
        """FAILED (or CANCELLED, when named by id) jobs → WAITING with attempts, stalls and error
        reset; None means every failed job (up to `limit`). Returns how many moved; event "waiting"."""

    @abc.abstractmethod
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
        """Delete up to `limit` finished jobs in `state`: those finished before `finished_before`,
        those beyond the newest `keep_last` (by finished_at), and those whose `expires_at` is before
        `expired_at`. Their data is gone. Returns how many were removed; event "removed" for each."""

    # -- worker ----------------------------------------------------------------------------------
    @abc.abstractmethod
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
        """Move up to `limit` runnable jobs to ACTIVE for `worker`, in one transaction.

        First promotes DELAYED jobs whose run_at is due. Hands out nothing when the queue is paused.
        Takes jobs by (priority, seq); with `names`, only jobs of those task names; with `caps`, at most
        `caps[name]` jobs of each name it holds (0: none; jobs passed over stay where they are, in order).
        With the queue's global concurrency set, never lets more than that many of its jobs be ACTIVE at
        once (counted in the same transaction; held back: `retry_in` is CONCURRENCY_RECHECK). With a
        `rate_limit`, never starts more than `limit` jobs per window of `per` seconds across every
        worker of the queue (fixed windows). Each claimed job: attempts += 1, worker, lease_until =
        now + lease, started_at = now, cancel_requested false, event "active".
        `retry_in` says when something may be claimable when nothing was, or when the result is
        `dry` (next due delayed job, or the rate window reopening), else None. A backend whose
        `wait_for_work` remembers a wake that came while nobody waited may set `dry`.
        """

    @abc.abstractmethod
    async def renew(self, queue: str, worker: str, job_ids: Sequence[str], lease: float, now: float) -> dict[str, bool]:
        """Extend the leases that `worker` still holds. Returns {job_id: cancel_requested} for those;
        ids missing from the answer were lost (lease expired and recovered, or job removed)."""

    @abc.abstractmethod
    async def finish(
        self, queue: str, worker: str, outcomes: Sequence[Outcome], now: float, *, keep_completed: int | None = None,
        keep_failed: int | None = None,
    ) -> builtins.list[Job]:
        """End attempts in one transaction: each ACTIVE job `worker` still holds takes its
        outcome's state (COMPLETED with result, FAILED/CANCELLED with error and traceback, or
        WAITING/DELAYED at run_at for a retry, keeping error/traceback of the last attempt).
        Clears worker and lease; sets finished_at and expires_at for finished states.
        With `keep_completed`, the same transaction then removes the oldest completed jobs of the queue
        beyond the newest `keep_completed` (as `clean(keep_last=...)` would), so that bound holds at every moment;
        `keep_failed` likewise for failed jobs (a backend may apply it only in steps that fail a job: under a fixed
        bound, only those can break it).
        Jobs that completed or failed are counted in the queue's metrics in the same transaction (see _metrics.py).
        Events: completed / failed / cancelled / retrying (and removed). Returns the jobs that moved."""

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
        """`finish(outcomes)` then `claim(...)`: a worker's two steps, which a backend may do in one round trip
        (each step stays atomic; the jobs that finished are not returned)."""
        if outcomes:
            await self.finish(queue, worker, outcomes, now, keep_completed=keep_completed, keep_failed=keep_failed)
        return await self.claim(queue, worker, limit=limit, lease=lease, now=now, names=names, rate_limit=rate_limit,
                                caps=caps)

    @abc.abstractmethod
    async def metrics(self, queue: str, since: float) -> builtins.list[MetricRow]:
        """The queue's metrics rows (see _metrics.py) of the minutes from the one holding `since` on, oldest first;
        minutes past _metrics.KEPT_MINUTES are gone."""

    @abc.abstractmethod
    async def set_progress(self, queue: str, worker: str, job_id: str, progress: Progress) -> bool:
        """Store progress of an ACTIVE job `worker` holds; event "progress". False if not held."""

    @abc.abstractmethod
    async def set_checkpoint(self, queue: str, worker: str, job_id: str, checkpoint: Any) -> bool:
        """Store a JSON checkpoint of an ACTIVE job `worker` holds, kept across retries. False if not held."""

    @abc.abstractmethod
    async def recover(self, queue: str, now: float) -> builtins.list[Job]:
        """ACTIVE jobs whose lease expired: stalls += 1; past options.max_stalls → FAILED with an
        error saying it stalled, else → WAITING to run again. Event "stalled" then the new state's.
        Returns the moved jobs."""

    @abc.abstractmethod
    async def wait_for_work(self, queue: str, timeout: float, offer: Offer | None = None) -> None:
        """Return when a job may have become claimable in `queue` (added, retried, resumed), or
        after `timeout` seconds, whichever is first. Spurious early returns are allowed. A backend that
        `takes_offers` may claim jobs for `offer` meanwhile (see Offer), and then returns too."""

    def on_work(self, queue: str, timeout: float, woken: asyncio.Future[None], offer: Offer | None = None
                ) -> Callable[[], None] | None:
        """`wait_for_work` without a task of its own, where the backend can: settle `woken` when `wait_for_work`
        would return, lending `offer` from now on; returns the call that ends the wait (the waiter calls it once
        `woken` is done or it gives up). None: not possible now, run `wait_for_work` instead."""
        return None

    # -- events ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def subscribe(self, queue: str, *, since: str | None = None) -> AsyncIterator[JobEvent]:
        """Start a subscription to `queue` and return its iterator once it is live: it yields every
        event published after this call returned, in order; with `since` (an event id, or "0" for
        the oldest retained), the retained events after that id first. It ends when the backend
        closes; `aclose()` it to unsubscribe earlier."""

    async def watch(
        self, queue: str, job_id: str, known: Job | None = None
    ) -> tuple[AsyncIterator[JobEvent], Job | None]:
        """A live subscription to `queue`, then the job as read after it went live (None if unknown), for a
        caller that waits on one job: no event after that read is missed (a backend may also yield a few
        earlier ones, and may do both steps in one round trip). A backend may yield only the job's end (Redis:
        pushed to the caller's inbox by the script that ends it), never missing it. `known` is the job as the
        caller last saw it: a backend that can replay every event of the job since then (or that registered the
        caller for the job's end when it added it) may return `known` instead of reading the job."""
        events = await self.subscribe(queue)
        try:
            return events, await self.get(queue, job_id)
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise

    # -- webhooks' outbox: a delivery is written by the step that ends its job (finish, recover) ---------------
    # A job that completes or fails for good, with `options.webhook` or else the queue's record ("webhook", "url"),
    # gets a pending delivery due at once (see backends/_outbox.py), in the same atomic step. Policy (the retry
    # schedule, what counts as delivered) lives above, in the sender.
    @abc.abstractmethod
    async def webhook_queues(self) -> builtins.list[str]:
        """Names of the queues whose outbox holds pending deliveries, sorted (their jobs may be gone already)."""

    @abc.abstractmethod
    async def claim_webhooks(self, queue: str, sender: str, *, limit: int, lease: float, now: float
                             ) -> builtins.list[WebhookDelivery]:
        """Lease up to `limit` due pending deliveries (oldest due first) to `sender` until now + `lease`, atomically:
        no other sender gets them while the lease lasts."""

    @abc.abstractmethod
    async def settle_webhook(self, queue: str, sender: str, delivery_id: str, attempt: DeliveryAttempt,
                             next_at: float | None, now: float) -> bool:
        """Record `attempt` of a delivery `sender` still holds: delivered if it succeeded, else pending at `next_at`,
        or dead when that is None. Keeps the newest DELIVERIES_KEPT delivered and dead ones. False if not held."""

    @abc.abstractmethod
    async def webhook_deliveries(self, queue: str, *, state: DeliveryState | None = None, job_id: str | None = None,
                                 limit: int = 100) -> builtins.list[WebhookDelivery]:
        """Deliveries of `queue`, newest first, optionally only in `state` or of one job."""

    @abc.abstractmethod
    async def replay_webhook(self, queue: str, delivery_id: str, now: float) -> WebhookDelivery | None:
        """Make a delivery pending and due now, with a fresh schedule and the same id; None if unknown."""

    # -- workers ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Record that a worker is alive for `ttl` seconds more."""

    @abc.abstractmethod
    async def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's heartbeat (it stopped cleanly)."""

    @abc.abstractmethod
    async def workers(self, now: float, queue: str | None = None) -> builtins.list[WorkerInfo]:
        """Workers whose heartbeat has not expired, optionally only those serving `queue`."""

    # -- records: small versioned documents per queue (schedules), for policy that lives above --------------
    @abc.abstractmethod
    async def read_record(self, queue: str, kind: str, key: str) -> Record | None:
        """The record of `kind` under `key` in `queue`, or None."""

    @abc.abstractmethod
    async def record_queues(self, kind: str) -> builtins.list[str]:
        """Names of the queues that hold records of `kind`, sorted."""

    @abc.abstractmethod
    async def list_records(self, queue: str, kind: str) -> builtins.list[Record]:
        """Every record of `kind` in `queue`, by key."""

    @abc.abstractmethod
    async def write_record(
        self, queue: str, kind: str, key: str, value: str | None, *, version: int | None = None,
        add: Sequence[Job] = (),
    ) -> int | None:
        """Store `value` (None deletes). With `version`, only if the stored version is that one (0: no record
        yet): compare-and-swap. Jobs in `add` (of `queue`; they need a value and a version) are added as `add()`
        adds them, idempotent on their ids, in the same atomic step and only when the write happens. Returns the
        new version (0 after a delete), or None when the version did not match and nothing was written."""

    # -- counters and budgets: shared quotas (requests/min, tokens/min, money), for policy that lives above ----------
    @abc.abstractmethod
    async def take(self, queue: str, asks: Sequence[Ask], now: float) -> float:
        """Grant every ask or none, atomically. An ask fits when the amounts granted under its key whose window
        has not passed (a grant lasts `window` seconds from `now`) plus its `amount` stay within its `limit`.
        Returns 0.0 when all were granted and recorded; else nothing is recorded and the result is the seconds
        until every ask would fit, as the grants now recorded lapse. Sliding windows: no span of `window` seconds
        ever holds more than `limit`. Raises ValueError for asks `check_asks` refuses."""

    @abc.abstractmethod
    async def restrict(self, queue: str, key: str, remaining: float, limit: float, until: float, now: float) -> None:
        """Let the counter under `key` grant at most `remaining` more before `until` (a server said "N left,
        reset in S", or "retry after S"): records a grant, lasting until `until`, of whatever its `limit` less
        what is granted now exceeds `remaining` by; nothing when it does not."""

    @abc.abstractmethod
    async def reserve(self, queue: str, key: str, amount: float, limit: float | None) -> tuple[bool, Spend]:
        """Budget under `key` (made at zero on first use): add `amount` to its reservations if spent + reserved +
        `amount` stays within `limit` (None: no limit). Returns whether it did, and the totals after."""

    @abc.abstractmethod
    async def settle(self, queue: str, key: str, reserved: float, actual: float) -> Spend:
        """Close a reservation of the budget under `key`: reserved -= `reserved`, spent += `actual`. Returns the
        totals after. Never refused: money already spent is recorded whatever the limit."""

    @abc.abstractmethod
    async def drop_budget(self, queue: str, key: str) -> Spend:
        """Remove the budget under `key`; returns its last totals (zeros if there was none)."""
