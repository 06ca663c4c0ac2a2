"""A mistake a user's type checker must catch: the result of `run()` is the task's return type, not Any."""

from __future__ import annotations

import jobkit


@jobkit.task(name="typing.greet")
async def greet(ctx: jobkit.Context, name: str) -> str:
    return f"hello {name}"


async def main() -> None:
    n: int = await jobkit.run(greet, "ada")
    print(n + 1)
