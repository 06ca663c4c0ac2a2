"""Where generated rows go, named by URL: `sqlite:///out.db?table=name`, `jsonl:///out.jsonl` (both inside the file
roots), `python:name` (a function the worker's code registered), or a kind registered with `register_sink`.

Exactly once: `open(run)` returns the keys of the rows a sink already holds for the run, so a resumed batch writes
none twice; the SQLite table also refuses a second row of one (run, key). A Python function sink is told nothing it
can answer with, so a row may reach it twice after a crash (at least once): register a Sink class for more.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import json
import os
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote

from ...config import mask_url
from .._paths import inside_roots
from .._registry import Registry, shorten
from .errors import AISetupError

__all__ = ["JSONLSink", "PythonSink", "SQLiteSink", "Sink", "SinkFactory", "open_sink", "register_python_sink",
           "register_sink"]

Row = dict[str, Any]
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Sink(abc.ABC):
    """Receives batches of result rows (each has `run` and `key`); built from its URL by a registered factory."""

    async def open(self, run: str, columns: Sequence[str]) -> set[str]:
        """Prepare for rows with `columns`; return the keys of rows already stored for `run` (empty if unknown)."""
        return set()

    @abc.abstractmethod
    async def write(self, rows: Sequence[Row]) -> None:
        """Store one batch, all or nothing if possible."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what `open` took; called once, whether the batch succeeded or not."""

    @property
    def created(self) -> str:
        """A file this sink created for the run (kept in the checkpoint: later attempts may only append to it)."""
        return ""


SinkFactory = Callable[[str, str], Sink]  # (url, the file this run created earlier or "") -> Sink
F = TypeVar("F", bound=Callable[[list[Row]], Any])
_kinds: dict[str, SinkFactory] = {}
_functions: Registry[Callable[[list[Row]], Any]] = Registry(
    "python sink", "jobkit.jobs.ai.register_python_sink(function)", AISetupError)


def register_sink(scheme: str, factory: SinkFactory) -> None:
    """Make sink URLs `scheme:...` open `factory(url, created)`."""
    if not scheme.isidentifier():
        raise ValueError(f"a sink scheme is a plain word like 'postgres', not {scheme!r}")
    _kinds[scheme.lower()] = factory


def register_python_sink(fn: F, name: str | None = None) -> F:
    """Make `sink="python:name"` (default: the function's name) call `fn` with each batch of rows; a decorator."""
    if not callable(fn):
        raise TypeError(f"register_python_sink needs a function that takes a list of rows, not {fn!r}")
    _functions.add(fn, name)
    return fn


def open_sink(url: str, created: str = "") -> Sink:
    factory = _kinds.get(url.split(":", 1)[0].lower())
    if factory is None:
        known = ", ".join(f"'{k}:...'" for k in sorted(_kinds))
        raise AISetupError(f"unknown sink {shorten(mask_url(url))!r}; known kinds: {known} (add one with"
                           " jobkit.jobs.ai.register_sink)")
    return factory(url, created)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else value


class PythonSink(Sink):
    """`python:name`: each batch goes to the registered function (async or not), as a list of row dicts."""

    def __init__(self, url: str) -> None:
        ref = url.split(":", 1)[1]
        if not ref:
            raise AISetupError("write a Python sink as 'python:name', the name of a function registered with"
                               " jobkit.jobs.ai.register_python_sink")
        self.fn = _functions.get(ref)

    async def write(self, rows: Sequence[Row]) -> None:
        if inspect.iscoroutinefunction(self.fn):
            await self.fn(list(rows))
            return
        result = await asyncio.to_thread(self.fn, list(rows))
        if inspect.isawaitable(result):
            await result


class SQLiteSink(Sink):
    """A table (made when missing) with one row per item and run; UNIQUE (run, key) keeps it exactly once."""

    def __init__(self, url: str) -> None:
        prefix = "sqlite:///"
        rest = url[len(prefix):] if url.lower().startswith(prefix) else ""
        path, _, query = rest.partition("?")
        tables = parse_qs(query).get("table", [])
        if not path or len(tables) != 1 or not _IDENT.match(tables[0]):
            raise AISetupError(f"write a SQLite sink as 'sqlite:///path/out.db?table=name' (a table name of letters,"
                               f" digits and underscores), not {shorten(mask_url(url))!r}")
        self.path = inside_roots(unquote(path), "the SQLite sink", AISetupError)
        self.table = tables[0]
        self.conn: sqlite3.Connection | None = None
        self.columns: list[str] = []

    async def open(self, run: str, columns: Sequence[str]) -> set[str]:
        self.columns = ["run", "key", *columns]
        return await asyncio.to_thread(self._open, run)

    def _open(self, run: str) -> set[str]:
        if not self.path.parent.is_dir():
            raise AISetupError(f"the folder of the SQLite sink does not exist: create {self.path.parent}")
        self.conn = conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        types = {"tokens_in": "INTEGER", "tokens_cached": "INTEGER", "tokens_out": "INTEGER", "cost": "REAL",
                 "created_at": "REAL"}
        cols = ", ".join(f'"{c}" {types.get(c, "TEXT")}' for c in self.columns)
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{self.table}" ({cols}, UNIQUE (run, key))')
        have = {row[1] for row in conn.execute(f'PRAGMA table_info("{self.table}")')}
        missing = [c for c in self.columns if c not in have]
        if missing:
            raise AISetupError(f"table {self.table!r} in {self.path} exists without column(s) {', '.join(missing)}:"
                               " add them, or write into a new table")
        return {k for (k,) in conn.execute(f'SELECT key FROM "{self.table}" WHERE run = ?', (run,))}

    async def write(self, rows: Sequence[Row]) -> None:
        values = [tuple(_cell(r.get(c)) for c in self.columns) for r in rows]
        await asyncio.to_thread(self._write, values)

    def _write(self, values: list[tuple[Any, ...]]) -> None:
        conn = self.conn
        assert conn is not None, "open() first"
        names = ", ".join(f'"{c}"' for c in self.columns)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(f'INSERT INTO "{self.table}" ({names}) VALUES ({", ".join("?" * len(self.columns))})',
                             values)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            await asyncio.to_thread(conn.close)


class JSONLSink(Sink):
    """One JSON object a line, appended and synced batch by batch. The run creates the file (it never appends to a
    file it did not create); on resume, a line cut short by a crash is removed and the keys written are read back."""

    def __init__(self, url: str, created: str) -> None:
        prefix = "jsonl:///"
        path = unquote(url[len(prefix):]) if url.lower().startswith(prefix) else ""
        if not path:
            raise AISetupError(f"write a JSONL sink as 'jsonl:///path/out.jsonl' (jsonl:////abs/path for an absolute"
                               f" path), not {shorten(mask_url(url))!r}")
        self.path = inside_roots(path, "the JSONL sink", AISetupError)
        self.own = bool(created) and Path(created) == self.path
        self.file: Any = None

    @property
    def created(self) -> str:
        return str(self.path)

    async def open(self, run: str, columns: Sequence[str]) -> set[str]:
        return await asyncio.to_thread(self._open, run)

    def _open(self, run: str) -> set[str]:
        if not self.path.parent.is_dir():
            raise AISetupError(f"the folder of the JSONL sink does not exist: create {self.path.parent}")
        if not self.own:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                raise AISetupError(f"{self.path} already exists, and a batch never appends to a file it did not"
                                   " create: name a new file (or remove that one)") from None
            os.close(fd)
            self.own = True
        keys = self._recover(run)
        self.file = self.path.open("ab")
        return keys

    def _recover(self, run: str) -> set[str]:
        """Cut a torn last line off, and return the keys of the run's rows."""
        keys: set[str] = set()
        good = 0
        with self.path.open("rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                good += len(line)
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get("run") == run:
                    keys.add(str(row.get("key")))
        if good != self.path.stat().st_size:
            os.truncate(self.path, good)
        return keys

    async def write(self, rows: Sequence[Row]) -> None:
        data = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in rows)
        await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()
        os.fsync(self.file.fileno())

    async def close(self) -> None:
        if self.file is not None:
            f, self.file = self.file, None
            await asyncio.to_thread(f.close)


register_sink("python", lambda url, created: PythonSink(url))
register_sink("sqlite", lambda url, created: SQLiteSink(url))
register_sink("jsonl", JSONLSink)
