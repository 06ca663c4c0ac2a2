"""The database layer of the built-in jobs: databases a payload may name, and table writers for SQLite and
PostgreSQL that resolve key conflicts and commit each batch exactly once (db_insert, the Excel import's
destinations, and any job that writes result tables)."""

from .conflicts import BatchCounts, ConflictPolicy, OnConflict, Upsert, conflict_policy
from .databases import Database, register_database, resolve_database
from .writer import ColumnSpec, ErrorKinds, TableWriter, open_writer

__all__ = [
    "BatchCounts", "ColumnSpec", "ConflictPolicy", "Database", "ErrorKinds", "OnConflict", "TableWriter", "Upsert",
    "conflict_policy", "open_writer", "register_database", "resolve_database",
]
