"""Random flows and a deterministic driver for them, shared by the property tests (memory) and the differential
contract test (each backend against memory).

A scenario is a tree of nodes, each on queue "a" or "b", with its planned outcome ("ok" or "fail"); a parent has a
policy. `drive` plays the workers: it claims one job at a time, queue by queue, and finishes it as planned, until
nothing is claimable; so every backend sees the same steps in the same order.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jobkit.backends import Backend, FlowSpec
from jobkit.models import (
    ContinuePartial,
    FailFast,
    FlowStatus,
    JobOptions,
    JobRef,
    JobState,
    Outcome,
    WaitAll,
    new_job,
)

Policy = FailFast | WaitAll | ContinuePartial
QUEUES = ("a", "b")


@dataclass
class Node:
    id: str
    queue: str  # "a" or "b", prefixed per run
    plan: str  # "ok" or "fail": how its own attempt ends
    policy: Policy | None = None
    children: list[Node] = field(default_factory=list)

    def walk(self) -> list[Node]:
        return [self, *(n for c in self.children for n in c.walk())]


def random_tree(rng: random.Random, depth: int = 3, prefix: str = "n") -> Node:
    counter = iter(range(10_000))

    def make(level: int) -> Node:
        node = Node(f"{prefix}{next(counter)}", rng.choice(QUEUES), "fail" if rng.random() < 0.2 else "ok")
        if level < depth and (level == 0 or rng.random() < 0.35):
            node.policy = rng.choice([FailFast(), WaitAll(), ContinuePartial(rng.choice([0.0, 0.25, 0.5, 1.0]))])
            node.children = [make(level + 1) for _ in range(rng.randint(1, 4))]
        return node

    return make(0)


def specs(root: Node, prefix: str) -> list[FlowSpec]:
    """The flow as `add_flow` takes it (queue names prefixed), parents before their children."""
    now = time.time()
    out: list[FlowSpec] = []

    def visit(node: Node, parent: JobRef | None) -> None:
        # Priority by position: every backend then hands jobs out in the same order (Redis numbers a flow's jobs
        # queue by queue, script by script; the local backends in the order given).
        options = JobOptions(priority=min(len(out), 1000))
        job = new_job(node.id, "scenario", prefix + node.queue, {"plan": node.plan}, options, now, now)
        if parent is not None:
            job.parent = parent
        links: tuple[tuple[JobRef, bool], ...] = ()
        if node.children:
            job.flow = FlowStatus(policy=node.policy or FailFast(), total=len(node.children))
            links = tuple((JobRef(queue=prefix + c.queue, id=c.id), True) for c in node.children)
        out.append(FlowSpec(job, links))
        for c in node.children:
            visit(c, JobRef(queue=prefix + node.queue, id=node.id))

    visit(root, None)
    return out


async def drive(backend: Backend, prefix: str, plan: dict[str, str], runs: Counter[str]) -> None:
    """Claim one job at a time, queue "a" then "b", and end it as planned, until no queue has one ready."""
    while True:
        moved = False
        for q in QUEUES:
            claimed = await backend.claim(prefix + q, "driver", limit=1, lease=60, now=time.time())
            for job in claimed.jobs:
                runs[job.id] += 1
                if plan[job.id] == "ok":
                    oc = Outcome(job_id=job.id, state=JobState.COMPLETED, result=job.id)
                else:
                    oc = Outcome(job_id=job.id, state=JobState.FAILED, error="planned to fail")
                await backend.finish(prefix + q, "driver", [oc], time.time())
                moved = True
        if not moved:
            return


async def snapshot(backend: Backend, root: Node, prefix: str) -> dict[str, Any]:
    """Each node's state, attempts and (a parent's) counts."""
    out: dict[str, Any] = {}
    for node in root.walk():
        job = await backend.get(prefix + node.queue, node.id)
        assert job is not None, f"{node.id} is gone"
        flow = None if job.flow is None else (job.flow.completed, job.flow.failed, job.flow.cancelled, job.flow.total)
        out[node.id] = (job.state.value, job.attempts, flow)
    return out
