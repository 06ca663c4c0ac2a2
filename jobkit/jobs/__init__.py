"""Built-in jobs, written against jobkit's public API like any user's tasks. `import jobkit.jobs` registers them.

A payload is untrusted data from whoever can enqueue: it names row models, sinks, databases and destinations
the worker's code registered, and paths inside the worker's file roots (`configure(file_roots=[...])`).
"""

from ._paths import configure, file_roots
from .ai import AIBatch, AIGenerate, BatchReport, GenerateResult, ai_batch, ai_generate
from .analytics import (
    Aggregate,
    AggregateReport,
    AggregateSetupError,
    aggregate,
    aggregate_flow,
    aggregate_partition,
)
from .cache import (
    CacheSink,
    CacheWarm,
    CacheWarmReport,
    CacheWarmSetupError,
    cache_warm,
    register_cache,
    register_cache_warmer,
)
from .db import Upsert, register_database
from .excel import (
    Destination,
    DestinationFactory,
    ExcelImport,
    ImportReport,
    ImportSetupError,
    Limits,
    RowError,
    RowsRejected,
    WorkbookError,
    excel_import,
    register_destination,
    register_python_destination,
    register_row_model,
)
from .exports import Export, ExportResult, ExportSetupError, export, register_query
from .insert import DbInsert, InsertRejected, InsertReport, InsertSetupError, db_insert
from .mail import (
    Attachment,
    EmailReport,
    EmailSetupError,
    Recipient,
    RecipientOutcome,
    SendEmail,
    register_email_templates,
    register_smtp_server,
    send_email,
)

__all__ = [
    "AIBatch",
    "AIGenerate",
    "Aggregate",
    "AggregateReport",
    "AggregateSetupError",
    "Attachment",
    "BatchReport",
    "CacheSink",
    "CacheWarm",
    "CacheWarmReport",
    "CacheWarmSetupError",
    "DbInsert",
    "Destination",
    "DestinationFactory",
    "EmailReport",
    "EmailSetupError",
    "ExcelImport",
    "Export",
    "ExportResult",
    "ExportSetupError",
    "GenerateResult",
    "ImportReport",
    "ImportSetupError",
    "InsertRejected",
    "InsertReport",
    "InsertSetupError",
    "Limits",
    "Recipient",
    "RecipientOutcome",
    "RowError",
    "RowsRejected",
    "SendEmail",
    "Upsert",
    "WorkbookError",
    "aggregate",
    "aggregate_flow",
    "aggregate_partition",
    "ai_batch",
    "ai_generate",
    "cache_warm",
    "configure",
    "db_insert",
    "excel_import",
    "export",
    "file_roots",
    "register_cache",
    "register_cache_warmer",
    "register_database",
    "register_destination",
    "register_email_templates",
    "register_python_destination",
    "register_query",
    "register_row_model",
    "register_smtp_server",
    "send_email",
]
