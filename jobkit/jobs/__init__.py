"""Built-in jobs, written against jobkit's public API like any user's tasks. `import jobkit.jobs` registers them."""

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
    register_row_model,
)

__all__ = [
    "Destination",
    "DestinationFactory",
    "ExcelImport",
    "ImportReport",
    "ImportSetupError",
    "Limits",
    "RowError",
    "RowsRejected",
    "WorkbookError",
    "excel_import",
    "register_destination",
    "register_row_model",
]
