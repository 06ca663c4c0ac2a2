"""Tasks for the CLI tests' worker subprocesses (`jobkit worker tests.cli.tasks`)."""

from __future__ import annotations

import jobkit


@jobkit.task(name="cli.echo", queue="cli-logs")
async def echo(ctx: jobkit.Context, payload: dict[str, str]) -> str:
    """Answers with a recognisable result, to show that no log line carries it."""
    ctx.log.info("working on job %s", ctx.job.id)
    return "RESULT-" + payload["secret"][::-1]
