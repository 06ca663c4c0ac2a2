"""One attempt of an Excel import: check the payload, open safely, resume after the last committed batch, commit
batch by batch.

Everything the payload names (row model, destination, paths) is checked before the workbook is opened.
Parsing and validation run on a worker thread, batch by batch, so the event loop keeps renewing the
job's lease and a notebook's progress bar keeps moving.
"""

from __future__ import annotations

import asyncio
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ... import Context
from ...config import mask_url
from .._paths import inside_roots
from ..db import BatchCounts, ConflictPolicy, conflict_policy
from .batches import Batch, check_merges, describe_error, find_header, header_map, read_batch
from .destinations import Destination, open_destination
from .errorfile import ErrorFile
from .errors import ImportSetupError, RowsRejected, WorkbookError
from .guard import CappedReader, damaged
from .models import ERRORS_KEPT, ExcelImport, ImportReport, ImportState, with_counts
from .reader import Workbook
from .rows import RowBuilder, map_columns, resolve_row_model
from .table_destination import TableDestination

__all__ = ["Importer"]


def _fingerprint(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


class Importer:
    """Runs one attempt; `run()` returns the report, or raises (Unrecoverable for anything a retry cannot fix)."""

    def __init__(self, ctx: Context, payload: ExcelImport) -> None:
        self.ctx, self.p = ctx, payload
        self.path = inside_roots(payload.path, "path", ImportSetupError)
        self.state = ImportState.model_validate(ctx.checkpoint) if ctx.checkpoint else ImportState()
        self.started = time.monotonic()
        self.base_elapsed = self.state.elapsed_s
        self.handled_before = self.state.rows_read + self.state.blank_rows
        self.total = 0
        self.sheet_title = str(payload.sheet)
        self.headers: dict[int, str] = {}

    async def run(self) -> ImportReport:
        model = resolve_row_model(self.p.row_model)
        errors = ErrorFile(self.path, self.p.error_file, self.state.error_file) if self.p.error_file else None
        dest = open_destination(self.p.destination)
        self._use_conflicts(dest)
        try:
            await self._import(model, dest, errors)
        except zipfile.BadZipFile as exc:  # whatever part of the zip it came from: damage, never worth a retry
            raise WorkbookError(damaged(self.path.name, exc)) from None
        finally:
            await dest.close()
        error_file = await self._write_error_file(errors)
        await self._progress(done=True)
        return self._report(error_file)

    async def _import(self, model: type[BaseModel], dest: Destination, errors: ErrorFile | None) -> None:
        await self.ctx.progress(0, "opening workbook")
        wb = await asyncio.to_thread(Workbook, self.path, self.p.limits)
        source: CappedReader | None = None
        try:
            rows, source, builder = await asyncio.to_thread(self._prepare, wb, model)
            committed = await dest.open(builder.model, self.ctx.job_id)
            if committed is not None and committed.get("next_row", 0) > self.state.next_row:
                self.state = ImportState.model_validate(committed)  # the batch committed; its checkpoint was lost
            self._check_same_file()
            await self._loop(rows, builder, dest)
        except RowsRejected:
            await self._write_error_file(errors)
            raise
        finally:
            if source is not None:
                source.close()
            wb.close()

    # -- before the first row ------------------------------------------------------------------------------------
    def _use_conflicts(self, dest: Destination) -> None:
        p = self.p
        try:
            policy = conflict_policy(p.on_conflict, p.key, p.duplicates)
        except ValueError as exc:
            raise ImportSetupError(f"on_conflict, key and duplicates do not fit together: {exc}") from None
        if isinstance(dest, TableDestination):
            dest.use_conflicts(policy)
        elif policy != ConflictPolicy():
            raise ImportSetupError(f"destination {mask_url(p.destination)!r} resolves no key conflicts: on_conflict,"
                                   " key and duplicates apply to sqlite: and postgresql: table destinations")

    def _prepare(self, wb: Workbook, model: type[BaseModel]) -> tuple[Iterator[tuple[int, dict[int, Any]]],
                                                                        CappedReader, RowBuilder]:
        sheet = wb.sheet(self.p.sheet)
        self.sheet_title = sheet.title
        facts = wb.scan(sheet)
        reader, source = wb.rows(sheet)
        try:
            rows = iter(reader)
            header_no, cells, consumed = find_header(rows, self.p.header_row, sheet.title)
            check_merges(facts.merges, header_no, sheet.title)
            columns = map_columns(cells, model, self.p.columns, sheet.title)
            self.headers = header_map(cells)
            reader.wanted = set(self.headers) if self.p.error_file else set(columns.by_column)
            self.total = max(0, facts.rows - consumed)
        except BaseException:
            source.close()
            raise
        return rows, source, RowBuilder(model, columns, wb.epoch, sheet.title)

    def _check_same_file(self) -> None:
        now = _fingerprint(self.path)
        if self.state.fingerprint and self.state.fingerprint != now and self.state.next_row:
            raise WorkbookError(f"{self.path.name} changed since this import started (rows up to"
                                f" {self.state.next_row - 1} were imported from the earlier file): it cannot be"
                                " resumed; import the new file as a new job")
        self.state.fingerprint = now

    # -- the batches ---------------------------------------------------------------------------------------------
    async def _loop(self, rows: Iterator[tuple[int, dict[int, Any]]], builder: RowBuilder, dest: Destination) -> None:
        keep = self.headers if self.p.error_file else None
        while not self.ctx.cancelled:
            batch = await asyncio.to_thread(read_batch, rows, builder, self.p.batch_size, self.state.next_row, keep)
            self._apply_policy(batch)
            if batch.rows_read or batch.blank_rows:
                await self._commit(batch, dest)
            await self._progress()
            if batch.done:
                return

    def _apply_policy(self, batch: Batch) -> None:
        if not batch.rows_rejected:
            return
        s = self.state
        first = describe_error(batch.errors[0])
        if self.p.on_error == "fail":
            self._keep_errors(batch)
            raise RowsRejected(f"{first}; on_error='fail' stops at the first bad row. {s.rows_imported:,} rows"
                               f" committed before it stay imported")
        if s.rows_rejected + batch.rows_rejected > self.p.max_errors:
            self._keep_errors(batch)
            s.rows_rejected += batch.rows_rejected
            raise RowsRejected(f"{s.rows_rejected:,} rows rejected, over max_errors={self.p.max_errors}; the first"
                               f" in the last batch: {first}. {s.rows_imported:,} rows committed before it stay"
                               " imported; fix the file or raise max_errors")

    def _keep_errors(self, batch: Batch) -> None:
        s = self.state
        s.errors.extend(batch.errors[: ERRORS_KEPT - len(s.errors)])
        s.rejected.extend(batch.rejected[: ERRORS_KEPT - len(s.rejected)])

    async def _commit(self, batch: Batch, dest: Destination) -> None:
        new = self.state.model_copy(deep=True)
        new.next_row = batch.last_row + 1
        new.rows_read += batch.rows_read
        new.rows_imported += len(batch.models)
        new.rows_rejected += batch.rows_rejected
        new.blank_rows += batch.blank_rows
        new.batches += 1
        new.elapsed_s = self._elapsed()
        prev, self.state = self.state, new
        self._keep_errors(batch)
        made: list[ImportState] = []

        def after(counts: BatchCounts) -> dict[str, Any]:
            made.append(with_counts(self.state, counts))
            return made[-1].model_dump(mode="json")

        try:
            if isinstance(dest, TableDestination):
                await dest.write_counted(batch.models, after)
            else:
                await dest.write(batch.models, after(BatchCounts(inserted=len(batch.models))))
        except BaseException:
            self.state = prev
            raise
        self.state = made[-1]
        await self.ctx.save_checkpoint(self.state.model_dump(mode="json"))

    def _elapsed(self) -> float:
        return self.base_elapsed + time.monotonic() - self.started

    async def _progress(self, done: bool = False) -> None:
        s = self.state
        handled = s.rows_read + s.blank_rows
        total = max(self.total, handled)
        secs = time.monotonic() - self.started
        rate = (handled - self.handled_before) / secs if secs > 0 else 0.0
        eta = (total - handled) / rate if rate > 0 and not done else (0.0 if done else None)
        percent = 100.0 if done else (min(99.9, 100.0 * handled / total) if total else 0.0)
        message = f"{handled:,} of {total:,} rows" + (f" · {rate:,.0f} rows/s" if rate else "")
        if eta:
            message += f" · ETA {eta:,.0f}s"
        await self.ctx.progress(percent, message, rows_done=handled, rows_total=total, rows_per_second=round(rate, 1),
                                eta_s=None if eta is None else round(eta, 1), batch=s.batches,
                                rows_imported=s.rows_imported, rows_rejected=s.rows_rejected,
                                rows_inserted=s.rows_inserted, rows_updated=s.rows_updated,
                                rows_skipped=s.rows_skipped, rows_duplicates=s.rows_duplicates)

    # -- the end -------------------------------------------------------------------------------------------------
    async def _write_error_file(self, errors: ErrorFile | None) -> str | None:
        if errors is None or not self.state.rejected:
            return None
        s = self.state
        target = await asyncio.to_thread(errors.write, list(self.headers.values()), s.rejected, s.rows_rejected)
        if not s.error_file:  # from now on the file is this job's own: a retry rewrites it, and only it
            s.error_file = str(target)
            await self.ctx.save_checkpoint(s.model_dump(mode="json"))
        return str(target)

    def _report(self, error_file: str | None) -> ImportReport:
        s = self.state
        return ImportReport(
            path=self.p.path, sheet=self.sheet_title, destination=mask_url(self.p.destination), rows_read=s.rows_read,
            rows_imported=s.rows_imported, rows_rejected=s.rows_rejected, blank_rows=s.blank_rows,
            rows_inserted=s.rows_inserted, rows_updated=s.rows_updated, rows_skipped=s.rows_skipped,
            rows_duplicates=s.rows_duplicates,
            duration_s=round(self._elapsed(), 3), attempts=self.ctx.attempt, errors=s.errors, error_file=error_file,
        )
