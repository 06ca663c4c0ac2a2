"""The DB insert job: rows into SQLite or PostgreSQL in committed batches, with key conflicts resolved."""

from .errors import InsertRejected, InsertSetupError
from .models import BatchReport, DbInsert, InsertReport, ResultOf
from .task import db_insert

__all__ = ["BatchReport", "DbInsert", "InsertRejected", "InsertReport", "InsertSetupError", "ResultOf", "db_insert"]
