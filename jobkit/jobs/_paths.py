"""Where a payload's paths may point: inside the worker's file roots, after `..` and symbolic links are resolved.

A built-in job reads and writes files named by its payload. The roots are set by the worker, never by
the payload: `configure(file_roots=[...])`, else the JOBKIT_FILE_ROOTS environment variable (separated by
os.pathsep), else the folder `data` in the current directory. Files a job creates are published only
where nothing exists yet (`create_new`), so a payload cannot make a job replace a file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import ConfigError
from ._registry import shorten

__all__ = ["DEFAULT_ROOT", "ENV", "configure", "create_new", "file_roots", "inside_roots", "publish_new", "temp_beside"]

ENV = "JOBKIT_FILE_ROOTS"
DEFAULT_ROOT = "data"
_configured: list[str] | None = None
_NO_HARD_LINKS = {getattr(errno, n) for n in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "EMLINK", "ENOSYS")
                  if hasattr(errno, n)}


def configure(*, file_roots: Sequence[str | os.PathLike[str]] | None) -> None:
    """Set the folders built-in jobs may read and write (the first one also anchors relative paths).

    `None` goes back to JOBKIT_FILE_ROOTS, or to `./data` when it is unset. Call it in the worker's code,
    before the worker starts.
    """
    global _configured
    if file_roots is not None and (isinstance(file_roots, str | os.PathLike) or not file_roots):
        raise ConfigError("file_roots is a non-empty list of folders, e.g. file_roots=['/srv/uploads']")
    _configured = None if file_roots is None else [os.fspath(r) for r in file_roots]


def _root_names() -> tuple[list[str], str]:
    if _configured is not None:
        return _configured, "jobkit.jobs.configure(file_roots=...)"
    env = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    if env:
        return env, ENV
    return [DEFAULT_ROOT], f"the default (./{DEFAULT_ROOT}; set {ENV} or call jobkit.jobs.configure(file_roots=...))"


def file_roots() -> list[Path]:
    """The roots in force, as absolute paths with symbolic links resolved (relative ones from the current directory)."""
    return [Path(os.path.realpath(os.path.expanduser(r))) for r in _root_names()[0]]


def inside_roots(path: str, what: str, error: type[Exception]) -> Path:
    """`path` resolved (a relative one inside the first root), provided it lands inside a root; else `error`.

    `what` names the path in the message ("path", "error_file"...). The result has every symbolic link
    resolved, so later opens do not follow a link the check did not see.
    """
    roots, source = file_roots(), _root_names()[1]
    listing = ", ".join(str(r) for r in roots)
    if "\x00" in path:
        raise error(f"{what} {shorten(path)!r} contains a NUL character: refused")
    if not any(r.is_dir() for r in roots):
        if len(roots) == 1:
            missing = f"the file root {listing} does not exist"
        else:
            missing = f"none of the file roots {listing} exists"
        raise error(f"{what} {shorten(path)!r} cannot be used: {missing} (from {source}). Create it and put the"
                    " files there, or set the folders the worker may use")
    target = Path(os.path.realpath(roots[0] / path))  # an absolute `path` replaces the root
    if any(target == r or target.is_relative_to(r) for r in roots):
        return target
    raise error(f"{what} {shorten(path)!r} is outside the file roots ({listing}, from {source}), directly or through"
                f" '..' or a symbolic link: the worker reads and writes only inside them. Move the file into a root, or"
                f" add its folder to the worker's roots ({ENV}, or jobkit.jobs.configure(file_roots=[...]))")


def create_new(target: Path, write: Callable[[Path], None]) -> None:
    """Create `target` with the content `write(tmp)` puts in a temporary file beside it; never replace anything.

    The finished file is hard-linked into place, which fails if any file or link already has that name
    (FileExistsError), so a reader never sees it half-written. Where hard links are not supported, the
    name is created with O_EXCL | O_NOFOLLOW and the content copied in.
    """
    tmp = temp_beside(target)
    try:
        write(tmp)
        publish_new(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def temp_beside(target: Path) -> Path:
    """A new empty temporary file in `target`'s folder, for content that `publish_new` will name `target`."""
    fd, name = tempfile.mkstemp(prefix=".jobkit-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(name)


def publish_new(tmp: Path, target: Path) -> None:
    """Give the finished file `tmp` (from `temp_beside`) the name `target` too, unless anything has that name already
    (FileExistsError); the caller removes `tmp`."""
    try:
        os.link(tmp, target)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        _copy_exclusive(tmp, target)


def _copy_exclusive(src: Path, target: Path) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as data:
            while chunk := data.read(1 << 20):
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
