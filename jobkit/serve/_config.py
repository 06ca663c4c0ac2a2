"""`ServeConfig`: what `jobkit serve` exposes (allowed tasks, uploads, waits, health thresholds) and who may call it."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ConfigError
from ..health import HealthThresholds
from ..models import invalid

__all__ = ["ServeConfig", "TokenEntry"]


class TokenEntry(BaseModel):
    """One API token, by its SHA-256 (hex): whose jobs it sees (`owner`), or every job and queue operation (`admin`)."""

    model_config = ConfigDict(frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hashlib.sha256(token.encode()).hexdigest()")
    owner: str | None = Field(default=None, min_length=1, max_length=200)
    admin: bool = False

    @model_validator(mode="after")
    def _someone(self) -> TokenEntry:
        if self.owner is None and not self.admin:
            raise ValueError("a token needs an owner (whose jobs it sees) or admin: true")
        return self


@functools.lru_cache(maxsize=8)
def _read_tokens(path: Path, mtime_ns: int, size: int) -> tuple[TokenEntry, ...]:
    """The file's tokens, read once per version of it (its modification time and size)."""
    data = json.loads(path.read_text())
    return tuple(TokenEntry.model_validate(t) for t in data["tokens"])


class ServeConfig(BaseModel):
    """Settings of the HTTP API; `ServeConfig.load(path)` reads them from a JSON file of the same fields."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False, extra="forbid")

    url: str | None = Field(default=None, description="backend URL (default: JOBKIT_URL, REDIS_URL, then SQLite)")
    tasks: frozenset[str] = Field(default=frozenset(), description="task names a client may submit (allow-list)")
    tokens: tuple[TokenEntry, ...] = ()
    tokens_file: Path | None = Field(default=None, description="a JSON file {'tokens': [TokenEntry, ...]}")
    upload_root: Path | None = Field(default=None, description="where uploaded files are kept (None: no uploads)")
    upload_max_bytes: int = Field(default=100 * 2**20, gt=0)
    upload_inline_max_bytes: int = Field(default=5 * 2**20, ge=0,
                                         description="smaller uploads run at once (the request waits), larger queue")
    upload_field: str = Field(default="path", min_length=1, description="payload field that gets the file's path")
    upload_sweep_every: float = Field(default=60.0, gt=0, description="seconds between removals of orphan uploads")
    wait_max: float = Field(default=300.0, gt=0, description="longest ?wait= a request may ask for, seconds")
    wait_inline: float = Field(default=30.0, gt=0, description="how long a small upload's request waits")
    ping_every: float = Field(default=15.0, gt=0, description="seconds between SSE keep-alive pings")
    health: HealthThresholds = HealthThresholds()
    webhooks: bool = Field(default=False, description="also send the webhooks' outbox (secret: JOBKIT_WEBHOOK_SECRET)")
    webhook_allow: tuple[str, ...] = Field(default=(), description="private targets webhooks may call, e.g."
                                           " 127.0.0.1 or 10.0.0.0/8 (default: JOBKIT_WEBHOOK_ALLOW)")

    @classmethod
    def load(cls, path: str | Path) -> ServeConfig:
        """The config in a JSON file; ConfigError naming the file and the bad field."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read serve config {path}: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid(f"serve config {path}", exc) from None

    def file_tokens(self) -> tuple[TokenEntry, ...]:
        """The tokens of `tokens_file`, read again whenever the file changed (edits apply without a restart)."""
        if self.tokens_file is None:
            return ()
        try:
            st = self.tokens_file.stat()
            return _read_tokens(self.tokens_file, st.st_mtime_ns, st.st_size)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read tokens file {self.tokens_file}: {exc}; it holds"
                              ' {"tokens": [{"sha256": "<hex>", "owner": "alice"}, {"sha256": "<hex>", "admin": true}]}'
                              ) from None
