"""The export job: a table or query streamed into a new .xlsx, .csv or .jsonl file, in flat memory."""

from .errors import ExportSetupError
from .models import Export, ExportResult, Filter
from .queries import register_query
from .task import export

__all__ = ["Export", "ExportResult", "ExportSetupError", "Filter", "export", "register_query"]
