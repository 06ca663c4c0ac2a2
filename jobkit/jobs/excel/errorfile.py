"""The optional error workbook: the rejected rows as they were, plus their sheet row and the reason."""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE  # type: ignore[import-untyped]

from .._paths import create_new, inside_roots
from .._registry import shorten
from .errors import ImportSetupError
from .models import RejectedRow

__all__ = ["ErrorFile"]

TRIES = 1000  # names tried beside the source: name.errors.xlsx, name.errors-2.xlsx, ...


class ErrorFile:
    """Where the error workbook goes, and writing it without ever replacing a file this job did not create.

    `option` is the payload's `error_file`: True for `<name>.errors.xlsx` beside the source (or the first
    free `<name>.errors-N.xlsx`), or a path inside the file roots that must not exist yet. `own` is the file
    an earlier attempt of the same job created (from its checkpoint): only that one may be rewritten.
    """

    def __init__(self, source: Path, option: bool | str, own: str) -> None:
        self.source, self.option, self.own = source, option, Path(own) if own else None
        self.chosen: Path | None = None
        if own or not isinstance(option, str):
            return
        if not option.lower().endswith(".xlsx"):
            raise ImportSetupError(f"error_file {shorten(option)!r} must end in .xlsx (it is an Excel workbook)")
        self.chosen = inside_roots(option, "error_file", ImportSetupError)
        if os.path.lexists(self.chosen):
            raise ImportSetupError(f"error_file {shorten(option)!r} already exists: an import never replaces a file"
                                   " it did not create; name a new file, or move that one away")

    def write(self, headers: Sequence[str], rows: Sequence[RejectedRow], total: int) -> Path:
        """Write the workbook (streamed by openpyxl's write-only mode) and return where it went."""
        try:
            return self._write(lambda tmp: _save(tmp, headers, rows, total))
        except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise ImportSetupError(f"cannot write the error file ({exc.strerror}): give error_file a folder the"
                                   " worker may write to, inside its file roots") from None
        except OSError as exc:
            if exc.errno != errno.EROFS:
                raise
            raise ImportSetupError("cannot write the error file: its folder is on a read-only file system; give"
                                   " error_file a writable folder inside the file roots") from None

    def _write(self, save: Callable[[Path], None]) -> Path:
        if self.own is not None:
            fd, tmp = tempfile.mkstemp(prefix=".jobkit-", suffix=".xlsx", dir=self.own.parent)
            os.close(fd)
            try:
                save(Path(tmp))
                os.replace(tmp, self.own)
            finally:
                Path(tmp).unlink(missing_ok=True)
            return self.own
        for target in self._candidates():
            try:
                create_new(target, save)
            except FileExistsError:
                continue
            return target
        if self.chosen is not None:
            raise ImportSetupError(f"error_file {shorten(str(self.option))!r} appeared while the import ran, made by"
                                   " something else: it was not replaced; name a new file")
        raise ImportSetupError(f"{TRIES} error files of {self.source.name} exist beside it: move them away")

    def _candidates(self) -> Iterator[Path]:
        if self.chosen is not None:
            yield self.chosen
            return
        stem = self.source.stem + ".errors"
        for n in range(1, TRIES + 1):
            path = self.source.with_name(f"{stem}{'' if n == 1 else f'-{n}'}.xlsx")
            if not os.path.lexists(path):
                yield path


def _save(path: Path, headers: Sequence[str], rows: Sequence[RejectedRow], total: int) -> None:
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Rejected rows")
    ws.append(["Row", *headers, "Reason"])
    for r in rows:
        ws.append([r.row, *(_cell(ws, v) for v in r.values), _cell(ws, r.reason)])
    if total > len(rows):
        ws.append([None, *([None] * len(headers)), f"... and {total - len(rows):,} more rejected rows not listed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wb.save(path)


def _cell(ws: Any, value: Any) -> Any:
    """Text stays text: a rejected cell reading '=...' must not come back as a live formula."""
    if not isinstance(value, str):
        return value
    cell = WriteOnlyCell(ws, value=ILLEGAL_CHARACTERS_RE.sub("", value))
    cell.data_type = "s"
    return cell
