"""One attempt of a DB insert: check the payload, resume after the last committed batch, write batch by batch.

Everything the payload names (database, table, file, job, row model) is checked before the first row is
read. Reading and converting run on a worker thread, batch by batch, so the event loop keeps renewing the
job's lease and progress keeps flowing.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ... import Context, JobState
from .._owners import read_job
from .._paths import inside_roots
from .._registry import shorten
from ..db import BatchCounts, ErrorKinds, TableWriter, conflict_policy, open_writer, resolve_database
from ..excel.errors import ImportSetupError
from ..excel.models import RowError
from ..excel.rows import resolve_row_model
from .errors import InsertRejected, InsertSetupError
from .models import BATCHES_KEPT, ERRORS_KEPT, BatchReport, DbInsert, InsertReport, InsertState
from .sources import Chunk, CsvSource, ListSource, RowSource, file_source

__all__ = ["Inserter"]

ERRORS = ErrorKinds(InsertSetupError, InsertRejected)


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class Inserter:
    """Runs one attempt; `run()` returns the report, or raises (Unrecoverable for anything a retry cannot fix)."""

    def __init__(self, ctx: Context, payload: DbInsert) -> None:
        self.ctx, self.p = ctx, payload
        self.state = InsertState.model_validate(ctx.checkpoint) if ctx.checkpoint else InsertState()
        try:
            self.policy = conflict_policy(payload.on_conflict, payload.key, payload.duplicates)
        except ValidationError as exc:
            raise InsertSetupError(f"on_conflict, key and duplicates do not fit together: {exc}") from None
        self.db = resolve_database(payload.destination, InsertSetupError)
        self.started = time.monotonic()
        self.base_elapsed = self.state.elapsed_s
        self.rows_before, self.bytes_before = self.state.next_row, self.state.offset
        self.columns: list[str] = []
        self.key: list[str] = list(self.policy.key)
        self.last = BatchCounts()

    async def run(self) -> InsertReport:
        model = self._row_model()
        await self.ctx.progress(0, "opening source")
        source = await self._source()
        try:
            self.columns = self._columns(source, model)
            if self.columns:
                writer = open_writer(self.db, self.p.table, self.policy, ERRORS)
                writer.text_values = isinstance(source, CsvSource)
                try:
                    await self._insert(source, writer, model)
                finally:
                    await writer.close()
        finally:
            source.close()
        await self._progress(source, done=True)
        return self._report(source)

    # -- before the first row ------------------------------------------------------------------------------------
    def _row_model(self) -> type[BaseModel] | None:
        if self.p.row_model is None:
            return None
        try:
            return resolve_row_model(self.p.row_model)
        except ImportSetupError as exc:
            raise InsertSetupError(str(exc)) from None

    async def _source(self) -> RowSource:
        p = self.p
        if p.rows is not None:
            return ListSource(p.rows, f"{len(p.rows):,} rows in the payload")
        if p.path is not None:
            path = inside_roots(p.path, "path", InsertSetupError)
            source = await asyncio.to_thread(file_source, path, shorten(p.path), ",")
            fingerprint = _fingerprint(path)
            if self.state.fingerprint and self.state.fingerprint != fingerprint and self.state.next_row:
                source.close()
                raise InsertSetupError(f"{p.path} changed since this insert started (its first {self.state.next_row:,}"
                                       " rows were committed from the earlier file): it cannot be resumed; insert"
                                       " the new file as a new job")
            self.state.fingerprint = fingerprint
            return source
        assert p.result_of is not None
        return await self._result_source(p.result_of.queue, p.result_of.job_id)

    async def _result_source(self, queue: str, job_id: str) -> RowSource:
        job = await read_job(self.ctx.backend, self.ctx.job, queue, job_id)
        where = f"job {shorten(job_id)!r} of queue {shorten(queue)!r}"
        if job is None:
            raise InsertSetupError(f"{where} does not exist (or was removed by retention): there is no result to"
                                   " insert")
        if job.state is not JobState.COMPLETED:
            raise InsertSetupError(f"{where} is {job.state.value}, so it has no result yet: insert its result once"
                                   " it completed (run this job after it, e.g. in a flow or with depends_on)")
        rows = job.result.get("rows") if isinstance(job.result, dict) else job.result
        if not isinstance(rows, list):
            raise InsertSetupError(f"the result of {where} is not a list of rows (nor an object whose 'rows' is one)")
        return ListSource(rows, f"the result of {where}")

    def _columns(self, source: RowSource, model: type[BaseModel] | None) -> list[str]:
        if self.state.columns:
            return self.state.columns
        if self.p.columns:
            columns = list(self.p.columns)
            if model is not None:
                unknown = [c for c in columns if c not in model.model_fields]
                if unknown:
                    raise InsertSetupError(f"columns {', '.join(unknown)} are not fields of {model.__name__}")
        elif model is not None:
            columns = list(model.model_fields)
        else:
            columns = source.first_keys() or []
        if len(set(columns)) != len(columns):
            raise InsertSetupError(f"columns are named twice: {columns}")
        self.state.columns = columns
        return columns

    async def _insert(self, source: RowSource, writer: TableWriter, model: type[BaseModel] | None) -> None:
        committed = await writer.open(self.columns, self.ctx.job_id)
        if committed is not None and committed.get("next_row", 0) > self.state.next_row:
            self.state = InsertState.model_validate(committed)  # the batch committed; its checkpoint was lost
            self.rows_before, self.bytes_before = self.state.next_row, self.state.offset
        self.key = writer.key
        await asyncio.to_thread(source.start, self.state.next_row, self.state.offset)

        def prepare() -> tuple[Chunk, list[tuple[Any, ...]], list[RowError]]:
            chunk = source.read(self.p.batch_size)
            rows, errors = self._convert(chunk, writer, model)
            return chunk, rows, chunk.errors + errors

        # the next batch is read and converted on a thread while this one is written: the two overlap
        ahead: asyncio.Future[tuple[Chunk, list[tuple[Any, ...]], list[RowError]]] = asyncio.ensure_future(
            asyncio.to_thread(prepare))
        try:
            while not self.ctx.cancelled:
                chunk, rows, errors = await ahead
                if not chunk.done:
                    ahead = asyncio.ensure_future(asyncio.to_thread(prepare))
                self._apply_policy(errors)
                if chunk.position > self.state.next_row:
                    await self._commit(chunk, rows, errors, writer)
                await self._progress(source)
                if chunk.done:
                    return
        finally:
            if not ahead.done():  # let the thread finish before the source is closed
                await asyncio.gather(ahead, return_exceptions=True)

    # -- the batches ---------------------------------------------------------------------------------------------
    def _convert(self, chunk: Chunk, writer: TableWriter, model: type[BaseModel] | None
                 ) -> tuple[list[tuple[Any, ...]], list[RowError]]:
        values, numbers, errors = self._values(chunk, model)
        rows, bad = writer.convert_many(values)
        columns = self.columns
        for i, refused in bad:
            errors.append(RowError(row=numbers[i], column=refused.column, field=refused.column, message=str(refused),
                                   value=_shown(values[i][columns.index(refused.column)])))
        errors.sort(key=lambda e: e.row)
        return rows, errors

    def _values(self, chunk: Chunk, model: type[BaseModel] | None
                ) -> tuple[list[Sequence[Any]], list[int], list[RowError]]:
        """Each record's values in column order, with its row number; the records that cannot be rows as errors."""
        columns = self.columns
        records = [record for _, record in chunk.records]
        if model is None and {len(columns)}.issuperset(map(len, records)):
            try:  # every record has exactly the columns (the common case): picked in C
                pick = operator.itemgetter(*columns)
                picked = list(map(pick, records))
                return ([(v,) for v in picked] if len(columns) == 1 else picked), [n for n, _ in chunk.records], []
            except KeyError:
                pass  # a record lacks a column and has another key instead: named below
        known = set(columns)
        values: list[Sequence[Any]] = []
        numbers: list[int] = []
        errors: list[RowError] = []
        for row_no, record in chunk.records:
            if model is not None:
                try:
                    record = model.model_validate(record).model_dump(mode="json")
                except ValidationError as exc:
                    errors.extend(RowError(row=row_no, field=".".join(str(p) for p in e["loc"]) or None,
                                           column=str(e["loc"][0]) if e["loc"] else None, message=e["msg"],
                                           value=_shown(e.get("input"))) for e in exc.errors())
                    continue
            elif len(record) > len(columns) or not known.issuperset(record):
                extra = [k for k in record if k not in known]
                if extra:
                    errors.append(RowError(row=row_no, message=f"keys {', '.join(map(repr, extra[:5]))} are not among"
                                           f" the columns written ({', '.join(columns)})"))
                    continue
            values.append(list(map(record.get, columns)))
            numbers.append(row_no)
        return values, numbers, errors

    def _apply_policy(self, errors: list[RowError]) -> None:
        if not errors:
            return
        s, first = self.state, errors[0]
        where = f"row {first.row}" + (f", column {first.column!r}" if first.column else "")
        committed = f"{s.inserted + s.updated:,} rows written by earlier batches stay written"
        if self.p.on_error == "fail":
            self._keep_errors(errors)
            raise InsertRejected(f"{where}: {first.message}; on_error='fail' stops at the first bad row ({committed};"
                                 " set on_error='skip' to leave bad rows out)")
        if s.rejected + len(errors) > self.p.max_errors:
            self._keep_errors(errors)
            raise InsertRejected(f"{s.rejected + len(errors):,} rows rejected, over max_errors={self.p.max_errors};"
                                 f" the first in the last batch: {where}: {first.message}. {committed}")

    def _keep_errors(self, errors: list[RowError]) -> None:
        self.state.errors.extend(errors[: ERRORS_KEPT - len(self.state.errors)])

    async def _commit(self, chunk: Chunk, rows: list[tuple[Any, ...]], errors: list[RowError],
                      writer: TableWriter) -> None:
        made: list[InsertState] = []

        def after(counts: BatchCounts) -> dict[str, Any]:
            new = self.state.model_copy(deep=True)
            new.next_row, new.offset = chunk.position, chunk.offset
            new.rows_read += len(chunk.records) + len(chunk.errors)
            new.inserted += counts.inserted
            new.updated += counts.updated
            new.skipped += counts.skipped
            new.duplicates += counts.duplicates
            new.rejected += len(errors)
            new.batches += 1
            new.elapsed_s = self._elapsed()
            new.errors.extend(errors[: ERRORS_KEPT - len(new.errors)])
            new.batch_counts.append(BatchReport(batch=new.batches, first_row=chunk.first_row, last_row=chunk.last_row,
                                                inserted=counts.inserted, updated=counts.updated,
                                                skipped=counts.skipped, duplicates=counts.duplicates,
                                                rejected=len(errors)))
            del new.batch_counts[:-BATCHES_KEPT]
            made.append(new)
            return new.model_dump(mode="json")

        self.last = await writer.write(rows, after) if rows else BatchCounts()
        if not rows:
            after(self.last)
        self.state = made[-1]
        await self.ctx.save_checkpoint(self.state.model_dump(mode="json"))

    def _elapsed(self) -> float:
        return self.base_elapsed + time.monotonic() - self.started

    async def _progress(self, source: RowSource, done: bool = False) -> None:
        s, last = self.state, self.last
        secs = time.monotonic() - self.started
        rate = (s.next_row - self.rows_before) / secs if secs > 0 else 0.0
        if source.total is not None:
            done_part, left, fraction = s.next_row - self.rows_before, source.total - s.next_row, (
                s.next_row / source.total if source.total else 1.0)
        else:  # a file: by bytes
            size = source.size or 0
            done_part, left, fraction = s.offset - self.bytes_before, size - s.offset, s.offset / size if size else 1.0
        percent = 100.0 if done else min(99.9, 100.0 * fraction)
        eta = None if done or done_part <= 0 else round(left * secs / done_part, 1)
        total = f" of {source.total:,}" if source.total is not None else ""
        message = (f"{s.next_row:,}{total} rows · {s.inserted:,} inserted, {s.updated:,} updated, {s.skipped:,}"
                   " skipped" + (f", {s.rejected:,} rejected" if s.rejected else "")
                   + (f" · {rate:,.0f} rows/s" if rate and not done else ""))
        await self.ctx.progress(
            percent, message, rows_done=s.next_row, rows_total=source.total, rows_per_second=round(rate, 1),
            eta_s=eta, batch=s.batches, inserted=s.inserted, updated=s.updated, skipped=s.skipped,
            duplicates=s.duplicates, rejected=s.rejected, batch_inserted=last.inserted, batch_updated=last.updated,
            batch_skipped=last.skipped, batch_duplicates=last.duplicates)

    def _report(self, source: RowSource) -> InsertReport:
        s, p = self.state, self.p
        mode = p.on_conflict if isinstance(p.on_conflict, str) else f"upsert({', '.join(p.on_conflict.upsert)})"
        return InsertReport(
            destination=self.db.name, table=p.table, source=source.description, key=self.key, on_conflict=mode,
            rows_read=s.rows_read, inserted=s.inserted, updated=s.updated, skipped=s.skipped, duplicates=s.duplicates,
            rejected=s.rejected, batches=s.batches, batch_counts=s.batch_counts, errors=s.errors,
            duration_s=round(self._elapsed(), 3), attempts=self.ctx.attempt)


def _shown(value: Any) -> Any:
    """A bad value as the report keeps it: JSON scalars as they are, long text cut, anything else as its repr."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return shorten(value if isinstance(value, str) else repr(value), 200)
