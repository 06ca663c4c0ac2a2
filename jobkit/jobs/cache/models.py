"""The cache warm's payload (`CacheWarm`), its result (`CacheWarmReport`) and its checkpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CacheWarm", "CacheWarmReport", "WarmError", "WarmState"]

ERRORS_KEPT = 100


class CacheWarm(BaseModel):
    """Compute values for cache keys with a registered warmer and write them with a time to live."""

    model_config = ConfigDict(extra="forbid")

    warmer: str = Field(description="a function registered with register_cache_warmer: its name or import path")
    keys: list[str] = Field(default_factory=list, description="keys to warm, each under the warmer's prefix")
    patterns: list[str] = Field(default_factory=list, description="glob patterns ('report:*'): the warmer's own keys"
                                " that match, or else the cache's existing keys that do")
    ttl: float = Field(gt=0, le=365 * 86400, allow_inf_nan=False, description="seconds each written value lives")
    cache: str = Field(default="default", description="a cache registered with register_cache")
    force: bool = Field(default=False, description="recompute keys that are still fresh")
    fresh_for: float | None = Field(default=None, ge=0, allow_inf_nan=False, description="a key with at least this"
                                    " many seconds left is fresh and skipped; default: half the ttl")
    batch_size: int = Field(default=100, ge=1, le=10_000, description="keys per batch (one round trip each way)")
    concurrency: int = Field(default=8, ge=1, le=100, description="values computed at once")
    max_keys: int = Field(default=1_000_000, ge=1, le=10_000_000, description="refuse a job that expands to more")
    on_error: Literal["fail", "skip"] = Field(default="fail", description="a value that fails to compute: fail the"
                                              " attempt (retried; written batches stay), or skip the key")

    @model_validator(mode="after")
    def _some_keys(self) -> CacheWarm:
        if not self.keys and not self.patterns:
            raise ValueError("give keys=[...] or patterns=[...] to warm")
        return self


class WarmError(BaseModel):
    """A key whose value could not be computed (on_error='skip')."""

    key: str
    error: str


class CacheWarmReport(BaseModel):
    """What a warm did, across all attempts."""

    warmer: str
    cache: str
    keys: int = 0  # keys after expanding the patterns
    written: int = 0
    fresh: int = 0  # skipped: still fresh
    failed: int = 0
    batches: int = 0
    errors: list[WarmError] = Field(default_factory=list)
    duration_s: float = 0.0
    attempts: int = 1


class WarmState(BaseModel):
    """The checkpoint: keys are handled in sorted order, so a retry goes on after the last key of a written batch."""

    last_key: str | None = None
    done: int = 0
    written: int = 0
    fresh: int = 0
    failed: int = 0
    batches: int = 0
    elapsed_s: float = 0.0
    errors: list[WarmError] = Field(default_factory=list)
