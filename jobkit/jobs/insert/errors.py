"""Why a DB insert stopped for good: each a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    ├── InsertSetupError  the payload names a source, database, table, columns or key that cannot work
    └── InsertRejected    the database refused a batch (a key conflict under "error", a constraint), or bad rows
                          went past the error policy; batches committed before stay committed
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["InsertRejected", "InsertSetupError"]


class InsertSetupError(Unrecoverable):
    """The source, destination, table, columns or key in the payload cannot work; nothing was written."""


class InsertRejected(Unrecoverable):
    """A batch was refused, or bad rows stopped the insert under its error policy; earlier batches stay committed."""
