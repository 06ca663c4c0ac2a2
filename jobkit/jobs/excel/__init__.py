"""The Excel import job: streaming, typed, resumable, with a row-level error report."""

from .destinations import (
    Destination,
    DestinationFactory,
    PythonDestination,
    register_destination,
    register_python_destination,
)
from .errors import ImportSetupError, RowsRejected, WorkbookError
from .models import ExcelImport, ImportReport, Limits, RowError
from .rows import register_row_model
from .sqlite_destination import SQLiteDestination
from .task import excel_import

__all__ = [
    "Destination",
    "DestinationFactory",
    "ExcelImport",
    "ImportReport",
    "ImportSetupError",
    "Limits",
    "PythonDestination",
    "RowError",
    "RowsRejected",
    "SQLiteDestination",
    "WorkbookError",
    "excel_import",
    "register_destination",
    "register_python_destination",
    "register_row_model",
]
