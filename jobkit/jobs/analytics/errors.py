"""Why an aggregation stopped for good: a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    └── AggregateSetupError  the payload names a source, file, column, range or destination that cannot work
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["AggregateSetupError"]


class AggregateSetupError(Unrecoverable):
    """The source, files, columns, metrics, range or destination in the payload cannot work; nothing was written."""
