"""How the `jobkit` command logs: jobkit (and the task modules it was given) at the level asked for, every other
library at WARNING unless asked, because their debug lines can carry payloads and results (aiosqlite's do)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

__all__ = ["LEVELS", "configure_logging", "log_all_from_env"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_all_from_env() -> bool:
    return os.environ.get("JOBKIT_LOG_ALL", "").strip().lower() in ("1", "true", "yes")


def configure_logging(level: str, *, everything: bool = False, own: Sequence[str] = ()) -> None:
    """jobkit's loggers, and those of the packages in `own` (the user's task modules), at `level`.

    Other libraries' loggers stay at WARNING unless `everything` (`--log-all`, JOBKIT_LOG_ALL=1) lets them
    log at `level` too.
    """
    number: int = logging.getLevelName(level.upper())
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    root.setLevel(number if everything else max(logging.WARNING, number))
    for name in ("jobkit", *{m.split(".", 1)[0] for m in own}):
        logging.getLogger(name).setLevel(number)
