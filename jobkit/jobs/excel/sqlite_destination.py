"""`sqlite:///file.db?table=name`: rows into a table of a SQLite file inside the file roots (see table_destination)."""

from __future__ import annotations

from ..db.writer import MARKERS
from .table_destination import TableDestination

__all__ = ["MARKERS", "SQLiteDestination"]


class SQLiteDestination(TableDestination):
    """A SQLite table destination; its database also holds `_jobkit_imports` (job id -> state)."""
