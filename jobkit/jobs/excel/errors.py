"""Why an import stopped for good: each a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    ├── WorkbookError     the file is not a workbook we can read safely (format, corruption, limits, layout)
    ├── ImportSetupError  the payload names a row model, mapping or destination that cannot work
    └── RowsRejected      the error policy stopped the import (on_error="fail", or over max_errors)
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["ImportSetupError", "RowsRejected", "WorkbookError"]


class WorkbookError(Unrecoverable):
    """The workbook cannot be read safely; the message says what is wrong with the file and how to fix it."""


class ImportSetupError(Unrecoverable):
    """The row model, column mapping or destination in the payload cannot work."""


class RowsRejected(Unrecoverable):
    """Bad rows stopped the import under its error policy; batches committed before stay committed."""
