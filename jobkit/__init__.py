"""jobkit: an asyncio job queue with memory, SQLite and Redis backends, made for notebooks and production."""

from .backends import Backend
from .config import connect
from .context import Context
from .deliveries import DeliveryAttempt, WebhookDelivery
from .errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    JobCancelled,
    JobFailed,
    JobkitError,
    JobNotFound,
    JobTimeout,
    PayloadError,
    ScheduleNotFound,
    TaskNotFound,
    Unrecoverable,
)
from .flows import FlowNode, flow
from .handle import JobHandle
from .health import HealthReport, HealthThresholds, health
from .metrics import Metrics, Percentiles, collect_metrics
from .models import (
    Backoff,
    Child,
    ContinuePartial,
    FailFast,
    FlowStatus,
    Job,
    JobEvent,
    JobOptions,
    JobRef,
    JobState,
    Progress,
    QueueCounts,
    RateLimit,
    Retention,
    Schedule,
    WaitAll,
)
from .notebook import dashboard, progress_group
from .queue import Queue
from .run import run, run_sync, submit
from .spool import flush_spool, spool_size
from .task import Task, task
from .worker import Worker

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "Backoff",
    "Child",
    "ConfigError",
    "Context",
    "ContinuePartial",
    "DeliveryAttempt",
    "FailFast",
    "FlowNode",
    "FlowStatus",
    "HealthReport",
    "HealthThresholds",
    "Job",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobOptions",
    "JobRef",
    "JobState",
    "JobTimeout",
    "JobkitError",
    "Metrics",
    "PayloadError",
    "Percentiles",
    "Progress",
    "Queue",
    "QueueCounts",
    "RateLimit",
    "Retention",
    "Schedule",
    "ScheduleNotFound",
    "Task",
    "TaskNotFound",
    "Unrecoverable",
    "WaitAll",
    "WebhookDelivery",
    "Worker",
    "__version__",
    "collect_metrics",
    "connect",
    "dashboard",
    "flow",
    "flush_spool",
    "health",
    "progress_group",
    "run",
    "run_sync",
    "spool_size",
    "submit",
    "task",
]
