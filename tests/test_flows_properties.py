"""Properties of flows on the memory backend, over random trees, policies and outcomes (hypothesis): nothing hangs,
each parent's counts are its children's states, a parent runs exactly when its policy allows, and running a flow
again re-runs exactly what did not complete."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobkit.backends import from_url
from jobkit.models import ContinuePartial, FailFast, JobState
from tests.flow_scenarios import Node, drive, random_tree, snapshot, specs

FINISHED = {"completed", "failed", "cancelled"}


def _allowed(node: Node, states: list[str]) -> bool:
    """Whether the parent's policy lets it run with children ended in `states`."""
    bad = sum(s != "completed" for s in states)
    if isinstance(node.policy, FailFast):
        return bad == 0
    if isinstance(node.policy, ContinuePartial):
        return bad <= node.policy.max_failed * len(states)
    return True


def check_run(root: Node, snap: dict[str, Any], runs: Counter[str]) -> None:
    parent_of = {c.id: n for n in root.walk() for c in n.children}
    for node in root.walk():
        state, attempts, flow = snap[node.id]
        assert state in FINISHED, f"{node.id} hangs in {state}"
        assert runs[node.id] == attempts <= 1, f"{node.id} ran {runs[node.id]} times"
        if node.children:
            kids = [snap[c.id][0] for c in node.children]
            assert flow == (kids.count("completed"), kids.count("failed"), kids.count("cancelled"), len(kids))
            if attempts:  # it ran: its children had all ended, and its policy allowed it
                assert _allowed(node, kids), (node.id, kids)
                assert state == ("completed" if node.plan == "ok" else "failed")
            elif state == "failed":
                assert not _allowed(node, [s for s in kids if s in FINISHED]), f"{node.id} failed without cause"
        elif attempts:
            assert state == ("completed" if node.plan == "ok" else "failed")
        if state == "cancelled":
            assert attempts == 0, f"{node.id} was cancelled after it ran"
            up = parent_of.get(node.id)
            assert up is not None and snap[up.id][0] in ("failed", "cancelled"), f"{node.id} cancelled for nothing"


def rerun_expected(root: Node, snap: dict[str, Any]) -> tuple[set[str], dict[str, str]]:
    """Which nodes run again when the flow is added again with every plan "ok", and the states after."""
    ran: set[str] = set()
    final = {k: v[0] for k, v in snap.items()}

    def visit(node: Node) -> None:
        needed = snap[node.id][0] != "completed" or any(snap[c.id][0] != "completed" for c in node.children)
        if not needed:
            return
        ran.add(node.id)
        final[node.id] = "completed"
        for c in node.children:
            visit(c)

    visit(root)
    return ran, final


async def scenario(root: Node) -> None:
    backend = from_url("memory://")
    await backend.open()
    try:
        plan = {n.id: n.plan for n in root.walk()}
        runs: Counter[str] = Counter()
        await backend.add_flow(specs(root, "p-"))
        await drive(backend, "p-", plan, runs)
        first = await snapshot(backend, root, "p-")
        check_run(root, first, runs)

        again, final = rerun_expected(root, first)
        before = Counter(runs)
        await backend.add_flow(specs(root, "p-"))
        await drive(backend, "p-", {k: "ok" for k in plan}, runs)
        second = await snapshot(backend, root, "p-")
        assert {k: v[0] for k, v in second.items()} == final
        assert {k for k in runs if runs[k] > before[k]} == again, "exactly what did not complete ran again"
        assert all(runs[k] - before[k] <= 1 for k in runs)
    finally:
        await backend.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_random_flows_keep_their_rules(seed: int) -> None:
    asyncio.run(scenario(random_tree(random.Random(seed))))


def test_a_known_tree() -> None:
    """A fixed example beside the random ones: fail_fast under wait_all, across both queues."""
    N = Node

    root = N("r", "a", "ok", policy=ContinuePartial(0.5), children=[
        N("x", "b", "ok", policy=FailFast(), children=[N("x1", "a", "fail"), N("x2", "b", "ok")]),
        N("y", "a", "ok"),
    ])
    asyncio.run(scenario(root))
    assert JobState.COMPLETED  # the scenario's own assertions did the checking
