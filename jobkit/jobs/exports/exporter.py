"""One attempt of an export: check the payload, read the rows in one snapshot, stream them into a temporary file
beside the target, then publish it under a name nothing else has.

A retry starts again from the first row (nothing was committed until the file was published), except after
the publishing step: the checkpoint names the file and its SHA-256, and a retry that finds that very file in
place returns it instead of exporting again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

from ... import Context
from .._owners import owner_of
from .._paths import inside_roots, publish_new, temp_beside
from .._registry import shorten
from ..db.databases import resolve_database
from ..db.readers import Reader, open_reader
from .errors import ExportSetupError
from .formats import FileWriter, open_writer
from .models import Export, ExportResult, Format
from .queries import Plan, query_sql, raw_sql, registered_query, table_sql

__all__ = ["Exporter"]

_EXTENSIONS: dict[str, Format] = {".xlsx": "xlsx", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


class Exporter:
    """Runs one attempt; `run()` returns the result, or raises (Unrecoverable for anything a retry cannot fix)."""

    def __init__(self, ctx: Context, payload: Export) -> None:
        self.ctx, self.p = ctx, payload
        self.started = time.monotonic()
        self.owner = self._owner()
        if payload.query is not None:
            self.query = registered_query(payload.query)
            self.db = resolve_database(self.query.database, ExportSetupError)
            if payload.source is not None and payload.source != self.query.database:
                raise ExportSetupError(f"query {payload.query!r} reads {self.query.database!r}, not"
                                       f" {shorten(payload.source)!r}: name that source, or another query")
        else:
            assert payload.source is not None
            self.db = resolve_database(payload.source, ExportSetupError)
            if payload.table is not None:
                self.db.check_table(payload.table, ExportSetupError)
        self.format = self._format()
        self.target = self._target()

    def _owner(self) -> str | None:
        mine, asked = owner_of(self.ctx.job), self.p.owner
        if mine is not None and asked is not None and asked != mine:
            raise ExportSetupError("this job exports its own owner's rows; its payload cannot ask for another owner's")
        return mine or asked

    def _format(self) -> Format:
        suffix = Path(self.p.path).suffix.lower() if self.p.path else ""
        by_name = _EXTENSIONS.get(suffix)
        if self.p.path and by_name is None:
            raise ExportSetupError(f"path {shorten(self.p.path)!r} must end in .xlsx, .csv, .jsonl or .ndjson")
        if self.p.format and by_name and self.p.format != by_name:
            raise ExportSetupError(f"format {self.p.format!r} does not match the path's extension {suffix!r}")
        return self.p.format or by_name or "xlsx"

    def _target(self) -> Path:
        path = self.p.path
        if path is None:
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.p.table or self.p.query or 'export'}-{self.ctx.job_id}")
            path = f"{stem[:120]}.{self.format}"
        target = inside_roots(path, "path", ExportSetupError)
        if not target.parent.is_dir():
            raise ExportSetupError(f"the folder of {shorten(path)!r} does not exist: create {target.parent}")
        return target

    async def run(self) -> ExportResult:
        done = await self._published_before()
        if done is not None:
            return done
        if os.path.lexists(self.target):
            raise ExportSetupError(f"{self.target} already exists: an export never replaces a file; name a new path")
        await self.ctx.progress(0, f"reading {self.db.name}")
        reader = open_reader(self.db, ExportSetupError)
        try:
            await reader.open()
            plan = await self._plan(reader)
            total = await reader.count(plan.sql, plan.params)
            columns = await reader.start(plan.sql, plan.params)
            tmp = await asyncio.to_thread(temp_beside, self.target)
            try:
                rows, sheets = await self._copy(reader, tmp, columns, total)
                return await self._publish(tmp, plan, columns, rows, sheets)
            finally:
                tmp.unlink(missing_ok=True)
        finally:
            await reader.close()

    async def _plan(self, reader: Reader) -> Plan:
        p = self.p
        if p.table is not None:
            have = await reader.table_columns(p.table)
            if have is None:
                raise ExportSetupError(f"table {p.table!r} does not exist in {self.db.name}")
            return table_sql(p, self.db, have, self.owner, reader.quote, reader.placeholder)
        if p.query is not None:
            return query_sql(p, self.query, self.owner, reader.placeholder)
        return raw_sql(p, self.db, self.owner, reader.placeholder)

    async def _copy(self, reader: Reader, tmp: Path, columns: list[str], total: int) -> tuple[int, int]:
        writer: FileWriter = await asyncio.to_thread(open_writer, self.format, tmp, columns, self.p.sheet,
                                                     self.p.escape_formulas)
        rows = 0
        try:
            while batch := await reader.fetch(self.p.batch_size):
                if self.ctx.cancelled:
                    raise ExportSetupError("cancelled before the file was complete: nothing was published")
                try:
                    await asyncio.to_thread(writer.write, batch)
                except ValueError as exc:
                    raise ExportSetupError(f"row {rows + 1:,} and after: {exc}") from None
                rows += len(batch)
                await self._progress(rows, total)
        finally:
            await asyncio.to_thread(writer.close)
        return rows, writer.sheets

    async def _publish(self, tmp: Path, plan: Plan, columns: list[str], rows: int, sheets: int) -> ExportResult:
        sha256, size = await asyncio.to_thread(_digest, tmp)
        result = ExportResult(path=str(self.target), format=self.format, rows=rows, columns=columns, bytes=size,
                              sha256=sha256, sheets=sheets, source=plan.description, owner=self.owner,
                              duration_s=round(time.monotonic() - self.started, 3), attempts=self.ctx.attempt)
        await self.ctx.save_checkpoint({"publishing": result.model_dump(mode="json")})
        try:
            await asyncio.to_thread(publish_new, tmp, self.target)
        except FileExistsError:
            raise ExportSetupError(f"{self.target} appeared while the export ran, made by something else: it was not"
                                   " replaced; name a new path") from None
        await self.ctx.progress(100, f"{rows:,} rows · {size:,} bytes · {self.target.name}", rows_done=rows,
                                rows_total=rows, bytes=size, path=str(self.target))
        return result

    async def _published_before(self) -> ExportResult | None:
        """The result of an earlier attempt that published its file, if that very file is in place."""
        state: Any = self.ctx.checkpoint
        if not isinstance(state, dict) or "publishing" not in state:
            return None
        earlier = ExportResult.model_validate(state["publishing"])
        if earlier.path != str(self.target) or not self.target.is_file():
            return None
        sha256, _ = await asyncio.to_thread(_digest, self.target)
        if sha256 != earlier.sha256:
            return None
        earlier.attempts = self.ctx.attempt
        return earlier

    async def _progress(self, rows: int, total: int) -> None:
        secs = time.monotonic() - self.started
        rate = rows / secs if secs > 0 else 0.0
        total = max(total, rows)
        eta = (total - rows) / rate if rate > 0 else None
        percent = min(99.9, 100.0 * rows / total) if total else 0.0
        message = f"{rows:,} of {total:,} rows" + (f" · {rate:,.0f} rows/s" if rate else "")
        await self.ctx.progress(percent, message, rows_done=rows, rows_total=total, rows_per_second=round(rate, 1),
                                eta_s=None if eta is None else round(eta, 1))
