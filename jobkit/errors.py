"""Every error jobkit raises, each with a message that names the problem and the fix.

    JobkitError
    ├── ConfigError            bad URL, unreachable backend, options out of range
    ├── PayloadError           payload or result not valid / not JSON-serialisable (also a ValueError)
    ├── TaskNotFound           a job names a task this worker does not know
    ├── JobNotFound            no job with that id
    ├── ScheduleNotFound       no schedule with that id
    ├── JobFailed              awaited job ended failed (carries the Job)
    ├── JobCancelled           awaited job was cancelled (carries the Job)
    ├── JobTimeout             waiting for a result took longer than asked (also a TimeoutError)
    ├── BackendError           the storage refused or lost a transition
    └── BackendUnavailable     the backend does not answer (also a ConfigError and a BackendError)
Raised by task code (not errors of jobkit itself):
    Unrecoverable              fail the job now, skipping remaining retries
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Job

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "JobkitError",
    "PayloadError",
    "ScheduleNotFound",
    "TaskNotFound",
    "Unrecoverable",
]


class JobkitError(Exception):
    """Base class of every error jobkit raises."""


class ConfigError(JobkitError, ValueError):
    """A URL, option or environment setting is wrong or unusable."""


class PayloadError(JobkitError, ValueError):
    """A payload or result cannot be validated or stored as JSON."""


class TaskNotFound(JobkitError, LookupError):
    """A job names a task that is not registered where it runs."""


class JobNotFound(JobkitError, LookupError):
    """No job with the given id exists (it may have been removed by retention)."""


class ScheduleNotFound(JobkitError, LookupError):
    """No schedule with the given id exists in that queue."""


class BackendError(JobkitError):
    """The storage refused a transition or went away."""


class BackendUnavailable(ConfigError, BackendError):
    """The backend does not answer (down, or out of reach): at open time, or a connection lost mid-call.

    A ConfigError for `connect()`'s callers and a BackendError for a transition's: existing handlers keep working.
    `submit(..., degrade="inline" | "spool")` catches it to run the job here or spool it until the backend is back.
    """


class _JobEnded(JobkitError):
    def __init__(self, job: Job, message: str) -> None:
        super().__init__(message)
        self.job = job


class JobFailed(_JobEnded):
    """The awaited job failed; `.job` holds its error and traceback."""

    def __init__(self, job: Job) -> None:
        super().__init__(job, f"job {job.id} ({job.name}) failed after {job.attempts} attempt(s): {job.error}")


class JobCancelled(_JobEnded):
    """The awaited job was cancelled."""

    def __init__(self, job: Job) -> None:
        super().__init__(job, f"job {job.id} ({job.name}) was cancelled")


class JobTimeout(JobkitError, TimeoutError):
    """Waiting for a job took longer than the caller allowed; the job itself goes on."""


class Unrecoverable(Exception):
    """Raise from a task to fail its job at once, without the remaining retries."""
