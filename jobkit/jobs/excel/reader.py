"""Open an untrusted .xlsx safely: sniff it, check its zip, read its catalogue, and stream one sheet.

openpyxl (with defusedxml) reads the small parts: the sheet list and styles (which cells are dates).
The shared strings are packed by `strings`; the sheet is streamed by `SheetRows` under a byte cap,
after a first pass (`scan`).
"""

from __future__ import annotations

import datetime as dt
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

from openpyxl.reader.excel import ExcelReader  # type: ignore[import-untyped]
from openpyxl.styles.stylesheet import apply_stylesheet  # type: ignore[import-untyped]
from openpyxl.xml.constants import SHARED_STRINGS  # type: ignore[import-untyped]

from .errors import WorkbookError
from .guard import CORRUPT, CappedReader, damaged, open_zip, sniff
from .models import MB, Limits
from .scan import SheetFacts, scan_sheet
from .sheet import SheetRows
from .strings import SharedStrings, read_shared_strings

__all__ = ["Sheet", "Workbook"]


@dataclass(frozen=True)
class Sheet:
    """A worksheet of the workbook: its title and the zip part holding its XML."""

    title: str
    part: str


class _CatalogueReader(ExcelReader):  # type: ignore[misc]
    """openpyxl's reader, limited to the parts we need, over a zip we already checked."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.valid_files = archive.namelist()
        self.read_only, self.keep_vba, self.data_only, self.keep_links, self.rich_text = True, False, True, False, False
        self.shared_strings: list[str] = []

    def read(self) -> None:
        self.read_manifest()
        self.read_workbook()
        apply_stylesheet(self.archive, self.wb)

    def strings_part(self) -> str | None:
        found = self.package.find(SHARED_STRINGS)
        return None if found is None else str(found.PartName[1:])


class Workbook:
    """An .xlsx opened for streaming; use as a context manager. Every problem is a WorkbookError."""

    def __init__(self, path: str | Path, limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.limits = limits or Limits()
        sniff(self.path, self.limits)
        self.zip = open_zip(self.path, self.limits)
        try:
            self._read_catalogue()
        except BaseException:
            self.zip.close()
            raise

    def _read_catalogue(self) -> None:
        reader = _CatalogueReader(self.zip)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader.read()
                found = list(reader.parser.find_sheets())
                strings_part = reader.strings_part()
        except WorkbookError:
            raise
        except Exception as exc:  # noqa: BLE001 - openpyxl and the XML layer raise many kinds; all mean "unreadable"
            raise WorkbookError(self._unreadable(exc)) from None
        wb = reader.wb
        self.epoch: dt.datetime = wb.epoch
        self.strings = self._read_strings(strings_part)
        self.date_styles: set[int] = set(wb._date_formats)
        self.duration_styles: set[int] = set(wb._timedelta_formats)
        self.sheets: list[Sheet] = []
        self.charts: set[str] = set()
        for sheet, rel in found:
            if "chartsheet" in rel.Type:
                self.charts.add(sheet.name)
            self.sheets.append(Sheet(sheet.name, rel.target))

    def _read_strings(self, part: str | None) -> SharedStrings:
        if part is None or part not in self.zip.NameToInfo:
            return SharedStrings()
        source = self._open_part(part, "shared strings")
        try:
            return read_shared_strings(source, self.name, part)
        finally:
            source.close()

    def _unreadable(self, exc: BaseException) -> str:
        if isinstance(exc, CORRUPT):
            return damaged(self.name, exc)
        detail = str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__
        if "Entities" in type(exc).__name__ or "DTD" in type(exc).__name__:
            return f"{self.name} declares XML entities or a DTD (an entity-expansion attack): refused"
        return (f"{self.name} cannot be read as a workbook ({type(exc).__name__}: {detail}): it is damaged or was"
                " not saved by a spreadsheet program; open it in Excel or LibreOffice and save it as .xlsx")

    def __enter__(self) -> Workbook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()

    @property
    def sheet_names(self) -> list[str]:
        return [s.title for s in self.sheets]

    def sheet(self, ref: str | int) -> Sheet:
        """The sheet named `ref` (exactly, else ignoring case and spaces) or at 0-based index `ref`."""
        listing = ", ".join(repr(n) for n in self.sheet_names) or "none"
        if isinstance(ref, int):
            if not 0 <= ref < len(self.sheets):
                raise WorkbookError(f"{self.name} has {len(self.sheets)} sheet(s) ({listing}); there is no sheet at"
                                    f" index {ref} (indexes start at 0)")
            found = self.sheets[ref]
        else:
            exact = [s for s in self.sheets if s.title == ref]
            loose = [s for s in self.sheets if s.title.strip().casefold() == ref.strip().casefold()]
            match = exact or (loose if len(loose) == 1 else [])
            if not match:
                raise WorkbookError(f"{self.name} has no sheet named {ref!r}; its sheets are: {listing}")
            found = match[0]
        if found.title in self.charts:
            raise WorkbookError(f"sheet {found.title!r} of {self.name} is a chart, not a worksheet; its sheets are:"
                                f" {listing}")
        if found.part not in self.zip.NameToInfo:
            raise WorkbookError(f"{self.name} lists sheet {found.title!r} but its part {found.part} is missing:"
                                " the file is damaged; open it in Excel and save it again")
        return found

    def _open(self, sheet: Sheet) -> CappedReader:
        return self._open_part(sheet.part, f"sheet {sheet.title!r}")

    def _open_part(self, part: str, what: str) -> CappedReader:
        try:
            stream = self.zip.open(part)
        except CORRUPT as exc:
            raise WorkbookError(damaged(self.name, exc, what)) from None
        cap = int(self.limits.max_uncompressed_mb * MB)
        return CappedReader(stream, cap, f"{self.name} ({what})")

    def scan(self, sheet: Sheet) -> SheetFacts:
        """A first pass over the sheet's bytes: row count and merged ranges; refuses corrupt or bomb parts."""
        source = self._open(sheet)
        try:
            return scan_sheet(source, self.name, sheet.part)
        finally:
            source.close()

    def rows(self, sheet: Sheet) -> tuple[SheetRows, CappedReader]:
        """The sheet's rows, and the stream to close when done."""
        source = self._open(sheet)
        rows = SheetRows(source, name=self.name, part=sheet.part, strings=self.strings, date_styles=self.date_styles,
                         duration_styles=self.duration_styles, epoch=self.epoch)
        return rows, source

