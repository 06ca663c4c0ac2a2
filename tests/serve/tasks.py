"""Tasks the serve tests submit over HTTP, run by a real Worker in the test process."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import jobkit

QUEUE = "serve-tests"
gates: dict[str, asyncio.Event] = {}  # a `stepper` job waits on gates[key] between its steps


class Echo(BaseModel):
    text: str
    path: str | None = None


@jobkit.task(name="serve_tests.echo", queue=QUEUE)
async def echo(ctx: jobkit.Context, payload: Echo) -> dict[str, str | None]:
    size = None
    if payload.path is not None:
        with open(payload.path, "rb") as f:
            size = str(len(f.read()))
    return {"text": payload.text, "size": size}


@jobkit.task(name="serve_tests.fail", queue=QUEUE)
async def fail(ctx: jobkit.Context, payload: dict[str, str]) -> None:
    raise jobkit.Unrecoverable(payload.get("why", "asked to fail"))


@jobkit.task(name="serve_tests.stepper", queue=QUEUE)
async def stepper(ctx: jobkit.Context, payload: dict[str, int | str]) -> int:
    """Reports progress `steps` times, waiting for its gate (if any) before each step."""
    steps = int(payload["steps"])
    gate = gates.get(str(payload.get("gate", "")))
    for i in range(1, steps + 1):
        if gate is not None:
            await gate.wait()
            gate.clear()
        await ctx.progress(100 * i / steps, f"step {i}")
    return steps


ALLOWED = frozenset({"serve_tests.echo", "serve_tests.fail", "serve_tests.stepper"})
