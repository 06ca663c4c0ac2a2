"""Differential: random flows (tests/flow_scenarios.py) played step by step on each backend and on the memory backend
end in the same states, counts and ledgers, on the first run and when run again."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from typing import Any

import pytest

from jobkit.backends import Backend, from_url
from tests.flow_scenarios import Node, drive, random_tree, snapshot, specs

SEEDS = range(40)


async def play(backend: Backend, root: Node, prefix: str) -> list[Any]:
    plan = {n.id: n.plan for n in root.walk()}
    runs: Counter[str] = Counter()
    await backend.add_flow(specs(root, prefix))
    await drive(backend, prefix, plan, runs)
    first = await snapshot(backend, root, prefix)
    ledgers = {n.id: [(link.child.id, link.owned, link.state) for link, _ in
                      await backend.children(prefix + n.queue, n.id, limit=1000)] for n in root.walk() if n.children}
    await backend.add_flow(specs(root, prefix))
    await drive(backend, prefix, {k: "ok" for k in plan}, runs)
    return [first, ledgers, await snapshot(backend, root, prefix), dict(runs)]


@pytest.mark.parametrize("seed", SEEDS)
async def test_same_as_memory(backend: Backend, seed: int) -> None:
    root = random_tree(random.Random(seed))
    reference = from_url("memory://")
    await reference.open()
    try:
        expected = await play(reference, root, "m-")
    finally:
        await reference.close()
    assert await play(backend, root, f"d{uuid.uuid4().hex[:6]}-") == expected
