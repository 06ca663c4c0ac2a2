"""Whose a job is, for built-in jobs that read another job's result or export rows for a user.

The owner is the job's own (`Job.owner`, set by whoever enqueued it through an authenticated door), never a
payload field. A job without an owner was enqueued by trusted code and may read any job; a job with one reads
only jobs of the same owner: another owner's job is "not found", never shown.
"""

from __future__ import annotations

from .. import Backend, Job

__all__ = ["owner_of", "read_job"]


def owner_of(job: Job) -> str | None:
    """The user `job` belongs to, or None (the engine's `Job.owner`; absent on engines without owners)."""
    value = getattr(job, "owner", None)
    return value if isinstance(value, str) and value else None


async def read_job(backend: Backend, reader: Job, queue: str, job_id: str) -> Job | None:
    """Job `job_id` of `queue` as `reader` may see it: None when it does not exist or belongs to someone else."""
    found = await backend.get(queue, job_id)
    if found is None:
        return None
    mine = owner_of(reader)
    return found if mine is None or owner_of(found) == mine else None
