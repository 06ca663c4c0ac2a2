"""Why an export stopped for good: a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    └── ExportSetupError  the payload names a source, table, column, query or file that cannot work or is not allowed
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["ExportSetupError"]


class ExportSetupError(Unrecoverable):
    """The source, query, columns, filters, owner or output file in the payload cannot work; nothing was written."""
