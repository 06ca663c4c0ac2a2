"""`jobkit.flow`: a parent job and its children (nested, on any queues), added in one step; the parent runs after.

The tree is validated and numbered here, once, above every backend: payloads against their tasks, options, job ids
(given or new, each once in the tree). The backend stores it with `add_flow`, which also makes running the same
flow again idempotent (see backends/_flows.py for the rules, docs/flows.md for the guarantees).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends import FlowSpec
from .config import BackendLike, get_backend
from .embedded import wanted
from .errors import ConfigError
from .handle import JobHandle
from .models import ContinuePartial, FailFast, FlowStatus, Job, JobRef, WaitAll, flow_policy, new_job_id
from .queue import Queue
from .task import Task, _registry

__all__ = ["ChildLike", "FlowNode", "flow", "flow_specs"]

PolicyLike = FailFast | WaitAll | ContinuePartial | str | None
_OPTIONS = frozenset({"job_id", "queue", "delay", "priority", "attempts", "timeout", "backoff", "keep_completed",
                      "keep_failed", "owner", "tags"})


@dataclass
class FlowNode:
    """One job of a flow: a task and its payload, its options, and (for a parent) its children and policy.

    Children are FlowNodes, `(task, payload)` or `(task, payload, {"job_id": ..., "queue": ..., "priority": ...})`.
    A child runs on its task's queue unless `queue` says otherwise; a parent waits for its children, then runs."""

    task: Task[Any] | str
    payload: Any = None
    children: Sequence[ChildLike] = ()
    policy: PolicyLike = None
    job_id: str | None = None
    queue: str | None = None
    # delay, priority, attempts, timeout, backoff, keep_*, owner (by default its parent's), tags
    options: dict[str, Any] = field(default_factory=dict)


ChildLike = FlowNode | tuple[Task[Any] | str, Any] | tuple[Task[Any] | str, Any, dict[str, Any]] | Task[Any]


def _node(item: ChildLike) -> FlowNode:
    if isinstance(item, FlowNode):
        return item
    if isinstance(item, Task):
        return FlowNode(item)
    if isinstance(item, tuple) and len(item) in (2, 3) and isinstance(item[0], Task | str):
        opts = dict(item[2]) if len(item) == 3 else {}
        unknown = set(opts) - _OPTIONS
        if unknown:
            raise ConfigError(f"unknown child option(s) {', '.join(sorted(unknown))}: use {', '.join(sorted(_OPTIONS))}"
                              " (a child with children of its own is a jobkit.FlowNode)")
        return FlowNode(item[0], item[1], job_id=opts.pop("job_id", None), queue=opts.pop("queue", None),
                        options=opts)
    raise ConfigError(f"a flow child is (task, payload), (task, payload, options) or a jobkit.FlowNode, not {item!r}")


def _queue_of(node: FlowNode, parent_queue: str | None) -> str:
    if node.queue is not None:
        return node.queue
    t = node.task if isinstance(node.task, Task) else _registry.get(node.task)
    if t is not None:
        return t.queue
    return parent_queue or "default"


def flow_specs(root: FlowNode, now: float) -> list[FlowSpec]:
    """The flow's jobs, validated, parents before their children (depth first, children in the order given)."""
    specs: list[FlowSpec] = []
    seen: set[tuple[str, str]] = set()

    def visit(node: FlowNode, parent: JobRef | None, parent_queue: str | None, job_id: str,
              parent_owner: str | None = None) -> JobRef:
        queue = _queue_of(node, parent_queue)
        unknown = set(node.options) - _OPTIONS
        if unknown:
            raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))} of flow job {job_id}")
        opts = dict(node.options)
        delay, owner = opts.pop("delay", None), opts.pop("owner", parent_owner)
        job: Job = Queue(queue)._prepare(node.task, [node.payload], job_ids=[job_id], delay=delay, now=now,
                                         owner=owner, **opts)[0]
        ref = JobRef(queue=queue, id=job.id)
        if (queue, job.id) in seen:
            raise ConfigError(f"job id {job.id!r} is given twice in queue {queue!r} of one flow: give each job its"
                              " own")
        seen.add((queue, job.id))
        kids = [_node(c) for c in node.children]
        if parent is not None:
            job.parent = parent
        if kids:
            job.flow = FlowStatus(policy=flow_policy(node.policy), total=len(kids))
        elif node.policy is not None:
            raise ConfigError(f"flow job {job.id} has a policy but no children: a policy says when a parent runs")
        at = len(specs)
        specs.append(FlowSpec(job))
        refs = [visit(k, ref, queue, k.job_id or new_job_id(), job.owner) for k in kids]
        if refs:
            specs[at] = FlowSpec(job, tuple((r, True) for r in refs))
        return ref

    visit(root, None, None, root.job_id or new_job_id())
    return specs


async def flow(
    task: Task[Any] | str, payload: Any = None, *, children: Iterable[ChildLike], policy: PolicyLike = None,
    job_id: str | None = None, queue: str | None = None, backend: BackendLike = None, **options: Any,
) -> JobHandle[Any]:
    """Add a parent job and its children in one step and return the parent's handle.

    The parent waits (in `waiting-children`) until its children end, then runs and reads them with
    `await ctx.children()`. `policy`: "fail_fast" (the default: a child that fails for good fails the parent and
    cancels the children not yet started), "wait_all" (it runs with the failures), or
    `jobkit.ContinuePartial(max_failed=0.05)` (it runs if at most that share failed). With job ids, adding the same
    flow again re-runs only the children that did not complete, and then the parent. `options`: delay, priority,
    attempts, timeout, backoff, keep_completed, keep_failed, owner (children get it too unless theirs say
    otherwise) and tags of the parent."""
    kids = list(children)
    if not kids:
        raise ConfigError("a flow needs at least one child: for a single job use jobkit.submit()")
    root = FlowNode(task, payload, kids, policy, job_id, queue, dict(options))
    specs = flow_specs(root, time.time())
    b = await get_backend(backend)
    stored = await b.add_flow(specs)
    parent = stored[0]
    assert parent is not None
    for name in dict.fromkeys(spec.job.queue for spec in specs):
        await wanted(b, name)
    handle: JobHandle[Any] = JobHandle(parent, b, task if isinstance(task, Task) else _registry.get(task))
    root_ref = JobRef(queue=parent.queue, id=parent.id)
    handle.child_handles = [JobHandle(job, b, _registry.get(job.name)) for spec, job in zip(specs, stored, strict=True)
                            if job is not None and spec.job.parent == root_ref]
    return handle
