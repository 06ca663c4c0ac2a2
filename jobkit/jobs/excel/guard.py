"""Checks made before a workbook is parsed: what the file really is, and whether its zip is sane.

An upload is untrusted. Everything here is cheap and bounded: it reads file signatures, the zip's
directory and XML prologues, and refuses lies before any part is expanded.
"""

from __future__ import annotations

import re
import stat
import zipfile
import zlib
from pathlib import Path
from typing import IO

from .errors import WorkbookError
from .models import MB, Limits

__all__ = ["CORRUPT", "CappedReader", "check_prolog", "damaged", "open_zip", "read_capped", "sniff"]

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Compound File Binary: legacy .xls, or an encrypted workbook
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")
PROLOG_LIMIT = 64 * 1024
RATIO_FLOOR = 1 * MB  # small parts may compress very well; ratios only matter for big ones
CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
_ENCODING = re.compile(rb"""^<\?xml[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ROOT = re.compile(rb"<[A-Za-z_]")
_WHY = (  # zipfile's and zlib's words -> what a person reads; their own text may quote kilobytes of raw bytes
    ("File is not a zip file", "it is truncated, or not a zip file"),
    ("Bad magic number", "a part's header is broken"),
    ("File name in directory", "a part's header does not match the zip's directory"),
    ("Truncated file header", "it ends in the middle of a part"),
    ("Bad CRC-32", "a part fails its checksum"),
    ("Overlapped entries", "its parts overlap (a zip bomb trick)"),
    ("Error -3 while decompressing", "a part's compressed data is broken"),
)


def damaged(name: str, exc: BaseException, part: str | None = None) -> str:
    """A short message a person can act on for a zip that zipfile or zlib found damaged."""
    text = str(exc)
    why = next((w for key, w in _WHY if key in text), None)
    if why is None:
        why = "it ends too early" if isinstance(exc, EOFError) else f"{type(exc).__name__}"
    where = f" ({part})" if part else ""
    return (f"{name} is damaged{where}: {why}. The upload was probably cut short or altered: upload it again, or"
            " open it in Excel or LibreOffice and save it again")


def sniff(path: Path, limits: Limits) -> None:
    """Refuse anything that is not a zip at all, naming what it is instead (PDF, CSV, .xls, encrypted)."""
    name = path.name
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO (open would block), a device
            raise WorkbookError(f"{name} is not a regular file: name the .xlsx file itself")
        size = st.st_size
        with path.open("rb") as f:
            head = f.read(8192)
    except FileNotFoundError:
        raise WorkbookError(f"{path} does not exist (the worker reads the path: is it on the same machine?)") from None
    except OSError as exc:
        raise WorkbookError(f"cannot open {path}: {exc.strerror or exc}") from None
    if size == 0:
        raise WorkbookError(f"{name} is empty (0 bytes): the upload failed; upload the workbook again")
    if size > limits.max_file_mb * MB:
        raise WorkbookError(f"{name} is {_mb(size)} MB, over the {limits.max_file_mb:g} MB limit"
                            " (raise limits.max_file_mb if the file is genuine)")
    if head.startswith(ZIP_MAGIC):
        return
    if head.startswith(OLE_MAGIC):
        raise WorkbookError(_ole_message(path))
    if head.startswith(b"%PDF"):
        raise WorkbookError(f"{name} is a PDF document, not an Excel workbook: export the data to .xlsx and try again")
    if _looks_like_text(head):
        raise WorkbookError(f"{name} is a text file (CSV or similar) renamed to look like a workbook: open it in"
                            " Excel or LibreOffice and save it as .xlsx, or import it as CSV")
    raise WorkbookError(f"{name} is not an .xlsx workbook (it starts with bytes {head[:8].hex(' ')}):"
                        " save the file as Excel Workbook (.xlsx) and upload it again")


def _ole_message(path: Path) -> str:
    if _contains(path, ENCRYPTED_STREAM):
        return (f"{path.name} is password-protected (encrypted): open it in Excel, remove the password"
                " (File > Info > Protect Workbook > Encrypt with Password, clear it), save, and upload it again")
    return (f"{path.name} is a legacy Excel 97-2003 (.xls) file: open it in Excel or LibreOffice and save it"
            " as Excel Workbook (.xlsx)")


def _contains(path: Path, needle: bytes) -> bool:
    carry = b""
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            if needle in carry + chunk:
                return True
            carry = chunk[-len(needle):]
    return False


def _looks_like_text(head: bytes) -> bool:
    if b"\x00" in head:
        return head.startswith((b"\xff\xfe", b"\xfe\xff"))  # UTF-16 text
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # cut inside a multi-byte character at the end
    return True


def open_zip(path: Path, limits: Limits) -> zipfile.ZipFile:
    """The workbook's zip, after its directory passed every limit (declared sizes, ratios, parts, encryption)."""
    name = path.name
    try:
        zf = zipfile.ZipFile(path)
    except CORRUPT as exc:
        raise WorkbookError(damaged(name, exc)) from None
    try:
        _check_directory(name, zf, limits)
    except BaseException:
        zf.close()
        raise
    return zf


def _check_directory(name: str, zf: zipfile.ZipFile, limits: Limits) -> None:
    infos = zf.infolist()
    if len(infos) > limits.max_parts:
        raise WorkbookError(f"{name} holds {len(infos):,} files, over the limit of {limits.max_parts:,}: refused")
    names = {i.filename for i in infos}
    if "[Content_Types].xml" not in names or not any(n.startswith("xl/") for n in names):
        kind = "a Word document" if "word/document.xml" in names else (
            "a PowerPoint file" if any(n.startswith("ppt/") for n in names) else "a zip archive")
        raise WorkbookError(f"{name} is {kind}, not an Excel workbook: save the data as .xlsx")
    total = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise WorkbookError(f"{name} has password-protected parts ({info.filename}): remove the password and"
                                " save it again")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise WorkbookError(f"{name} uses an unusual zip compression for {info.filename}: open it in Excel"
                                " and save it again")
        total += info.file_size
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size > RATIO_FLOOR and ratio > limits.max_ratio:
            raise WorkbookError(f"{name} looks like a zip bomb: {info.filename} would expand {ratio:,.0f} times"
                                f" (limit {limits.max_ratio:g}); refused before expanding it")
        if info.filename.endswith("sharedStrings.xml") and info.file_size > limits.max_shared_strings_mb * MB:
            raise WorkbookError(f"{name}'s shared string table would expand to {_mb(info.file_size)} MB,"
                                f" over the {limits.max_shared_strings_mb:g} MB limit: refused")
    if total > limits.max_uncompressed_mb * MB:
        raise WorkbookError(f"{name} would expand to {_mb(total)} MB, over the {limits.max_uncompressed_mb:g} MB"
                            " limit (a zip bomb, or raise limits.max_uncompressed_mb for a genuine file): refused")
    for info in infos:
        if info.filename.endswith((".xml", ".rels")):
            try:
                part = zf.open(info)
            except CORRUPT as exc:
                raise WorkbookError(damaged(name, exc, info.filename)) from None
            with part:
                check_prolog(name, info.filename, read_capped(part, PROLOG_LIMIT, f"{name} ({info.filename})"))


def _mb(size: float) -> str:
    return f"{size / MB:,.1f}" if size < 10 * MB else f"{size / MB:,.0f}"


def read_capped(stream: IO[bytes], size: int, what: str) -> bytes:
    """Up to `size` bytes from a zip part, turning corruption into a WorkbookError."""
    try:
        return stream.read(size)
    except CORRUPT as exc:
        raise WorkbookError(damaged(what, exc)) from None


def check_prolog(name: str, part: str, head: bytes) -> None:
    """Refuse XML that declares a DTD or entities (no Excel file does) or an encoding other than UTF-8."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or head[:64].count(b"\x00") > 2:
        raise WorkbookError(f"{name}: {part} is UTF-16 XML, which Excel does not write: refused")
    head = head.removeprefix(b"\xef\xbb\xbf")
    m = _ENCODING.match(head)
    if m and m.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
        raise WorkbookError(f"{name}: {part} declares encoding {m.group(1).decode()!r}, which Excel does not write:"
                            " refused")
    root = _ROOT.search(head)
    prolog = head if root is None else head[: root.start()]
    if b"<!DOCTYPE" in prolog or b"<!ENTITY" in prolog:
        raise WorkbookError(f"{name}: {part} declares a DTD or XML entities (an entity-expansion attack, or not"
                            " a file saved by Excel): refused")
    if root is None and len(head) >= PROLOG_LIMIT:
        raise WorkbookError(f"{name}: {part} has no XML element in its first {PROLOG_LIMIT // 1024} KB: refused")


class CappedReader:
    """A zip part read in chunks that raises WorkbookError once more than `cap` bytes came out of it."""

    def __init__(self, stream: IO[bytes], cap: int, what: str) -> None:
        self._stream, self._cap, self._what = stream, cap, what
        self.count = 0

    def read(self, size: int) -> bytes:
        try:
            data = self._stream.read(size)
        except CORRUPT as exc:
            raise WorkbookError(damaged(self._what, exc)) from None
        self.count += len(data)
        if self.count > self._cap:
            raise WorkbookError(f"{self._what} expands past {_mb(self._cap)} MB (a zip bomb, or raise"
                                " limits.max_uncompressed_mb): refused")
        return data

    def close(self) -> None:
        self._stream.close()
