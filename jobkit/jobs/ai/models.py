"""The AI jobs' payloads (`AIBatch`, `AIGenerate`), their reports, and the state a batch checkpoints."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ... import Backoff

__all__ = [
    "AIBatch", "AIGenerate", "BatchReport", "BatchState", "ERRORS_KEPT", "GenerateResult", "ItemError", "ModelUsage",
    "ProviderBatch", "RESERVED_COLUMNS", "Retry", "Section", "Source",
]

ERRORS_KEPT = 1000  # item errors kept in the report
RESERVED_COLUMNS = frozenset({"run", "key", "model", "tokens_in", "tokens_out", "tokens_cached", "cost", "created_at"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class Retry(BaseModel):
    """How one call is retried: 429s wait as the provider says and spend no attempt; 5xx, timeouts and resets do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=3, ge=1, le=10, description="tries per call, the first included")
    backoff: Backoff = Field(default=Backoff(kind="fixed", delay=10.0, jitter=0.3),
                             description="delay before each retry (jittered)")
    max_rate_wait: float = Field(default=900.0, gt=0, le=86_400,
                                 description="seconds one call may spend waiting out 429s before it fails")


class Section(BaseModel):
    """One generated part of each item: a prompt template, and optionally its own system prompt and output model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt: str = Field(min_length=1, description="template filled with the item's fields")
    system: str | None = Field(default=None, description="system prompt template (else the batch's)")
    response_model: str | None = Field(default=None, description="a registered pydantic model (else the batch's)")
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)


class Source(BaseModel):
    """Items read from a file inside the worker's file roots: a SQLite table, a JSONL file or an Excel sheet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["sqlite", "jsonl", "excel"]
    path: str = Field(description="inside the worker's file roots (relative: in the first root)")
    table: str | None = Field(default=None, description="sqlite: the table to read, in rowid order")
    sheet: str | int = Field(default=0, description="excel: sheet name, or 0-based index")
    header_row: int | None = Field(default=None, ge=1, description="excel: sheet row of the header")

    @model_validator(mode="after")
    def _table_for_sqlite(self) -> Source:
        if self.kind == "sqlite" and not (self.table and _NAME.match(self.table)):
            raise ValueError("a sqlite source names its table: letters, digits and underscores (table='terms')")
        return self


class _Call(BaseModel):
    """What every AI payload shares: the provider and model, the output, and the money."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(default="default", description="a provider configured by the worker (never a URL or key)")
    model: str = Field(min_length=1, max_length=200)
    system: str | None = Field(default=None, description="system prompt template")
    template: Literal["format", "jinja2"] = Field(default="format", description="str.format, or sandboxed Jinja2")
    response_model: str | None = Field(default=None, description="a model registered with register_response_model")
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    cost_limit: float | None = Field(default=50.0, ge=0, description="USD this job may spend; None: no limit")
    retry: Retry = Field(default_factory=Retry)
    max_reasks: int = Field(default=2, ge=0, le=5, description="re-asks after output that does not validate")
    request_timeout: float = Field(default=60.0, gt=0, le=600)


class AIBatch(_Call):
    """Generate every section for every item, through a shared rate limit and a cost budget, into a sink."""

    items: list[dict[str, Any]] | None = Field(default=None, description="the items, inline")
    source: Source | None = Field(default=None, description="or read them from a file")
    key: str | None = Field(default=None, description="the item field that identifies it (default: its position)")
    keep: list[str] = Field(default_factory=list, description="item fields copied into each result row")
    sections: dict[str, Section] = Field(min_length=1, description="section name -> its prompt")
    concurrency: int = Field(default=4, ge=1, le=64, description="calls in flight at once")
    batch_size: int = Field(default=10, ge=1, le=10_000, description="results per sink write")
    budget: str | None = Field(default=None, max_length=100,
                               description="a budget name shared by every job naming it: cost_limit is then its limit")
    on_error: Literal["skip", "fail"] = "skip"
    max_errors: int = Field(default=1000, ge=0, description="failed items tolerated by on_error='skip'")
    sink: str = Field(description="'sqlite:///out.db?table=name', 'jsonl:///out.jsonl' or 'python:name'")
    resume: str | None = Field(default=None, description="id of an earlier ai_batch job (same queue) to continue")
    mode: Literal["live", "batch_api"] = Field(default="live", description="live calls, or the provider's Batch API"
                                               " (JSONL upload, polled, about half the price, done within 24 h)")
    poll_interval: float = Field(default=60.0, ge=0.01, le=3600, description="batch_api: the longest wait between"
                                 " polls of a batch (the first comes after 1 s or less, then the wait doubles)")

    @field_validator("sections")
    @classmethod
    def _section_names(cls, v: dict[str, Section]) -> dict[str, Section]:
        for name in v:
            if not _NAME.match(name) or name in RESERVED_COLUMNS:
                raise ValueError(f"section name {name!r} must be letters, digits and underscores, and none of"
                                 f" {', '.join(sorted(RESERVED_COLUMNS))}")
        return v

    @field_validator("keep")
    @classmethod
    def _kept_names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not _NAME.match(n) or n in RESERVED_COLUMNS]
        if bad:
            raise ValueError(f"kept fields {bad} must be plain names, none of {', '.join(sorted(RESERVED_COLUMNS))}")
        return v

    @field_validator("sink")
    @classmethod
    def _sink_scheme(cls, v: str) -> str:
        if ":" not in v:
            raise ValueError("a sink is a URL: 'sqlite:///out.db?table=name', 'jsonl:///out.jsonl' or 'python:name'")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> AIBatch:
        if (self.items is None) == (self.source is None):
            raise ValueError("give the items inline (items=[...]) or a source (source={'kind': ..., 'path': ...}),"
                             " one of the two")
        overlap = set(self.keep) & set(self.sections)
        if overlap:
            raise ValueError(f"kept fields {sorted(overlap)} have the names of sections: rename one")
        return self


class AIGenerate(_Call):
    """Generate one answer for one item (`ai_generate`): the same calls, limits and prices as a batch."""

    prompt: str = Field(min_length=1, description="template filled with the item's fields")
    item: dict[str, Any] = Field(default_factory=dict)


class ItemError(BaseModel):
    """Why one item failed: which, which section, and the provider's or the validator's words."""

    index: int
    key: str
    section: str | None = None
    message: str
    status: int | None = Field(default=None, description="the HTTP status of the last answer, if any")


class ModelUsage(BaseModel):
    """Calls, tokens and cost of one model (every attempt and re-ask counted)."""

    calls: int = 0
    tokens_in: int = 0
    tokens_cached: int = 0
    tokens_out: int = 0
    cost: float = 0.0


class GenerateResult(BaseModel):
    """One generated answer: text, or `data` validated by the response model, and what it cost."""

    text: str
    data: dict[str, Any] | None = None
    model: str
    calls: int
    tokens_in: int
    tokens_cached: int
    tokens_out: int
    cost: float


class BatchReport(BaseModel):
    """What a batch did. `stopped` says why it ended early (the cost limit) and `resume_hint` how to go on."""

    run: str = Field(description="the run's id: the first job's; rows in the sink carry it")
    sink: str
    items_total: int
    items_ok: int
    items_failed: int
    items_left: int = Field(description="not done: the cost limit stopped the batch before them")
    calls: int
    tokens_in: int
    tokens_cached: int
    tokens_out: int
    cost: float
    cost_limit: float | None
    cost_interrupted: float = Field(default=0.0, description="reservations of calls a dead attempt left open, counted"
                                    " as spent (the provider may have billed them)")
    cost_by_model: dict[str, ModelUsage]
    stopped: Literal["cost_limit", "batch_ended"] | None = Field(default=None, description="cost_limit: no money"
                                                                 " left; batch_ended: a provider batch expired or"
                                                                 " was cancelled before all its requests ran")
    resume_hint: str | None = None
    duration_s: float
    attempts: int
    errors: list[ItemError] = Field(default_factory=list)


class ProviderBatch(BaseModel):
    """A Batch API batch of this run, checkpointed as soon as it exists so no attempt uploads or pays for it twice."""

    start: int = Field(description="the first item position it covers")
    end: int = Field(description="past the last item position it covers")
    requests: int
    reserved: float = Field(description="its worst case, reserved in the budget until it is collected")
    file_id: str = ""
    batch_id: str = ""
    counted: bool = False  # its files' usage is in the totals (a later attempt reading them again adds nothing)


class BatchState(BaseModel):
    """A batch's checkpoint: which items are handled, results paid for but not yet in the sink, and the totals."""

    run: str
    identity: str = Field(description="digest of what the results depend on: a resume must match it")
    seq: int = 0
    total: int = 0
    below: int = 0  # every item before this position is handled
    handled: list[int] = Field(default_factory=list)  # handled positions from `below` on
    pending: dict[str, dict[str, Any]] = Field(default_factory=dict)  # position -> result row, paid, not in the sink
    ok: int = 0
    failed: int = 0
    usage: dict[str, ModelUsage] = Field(default_factory=dict)
    cost_interrupted: float = 0.0
    by_job: dict[str, float] = Field(default_factory=dict)  # job id -> what its attempts spent (in its budget)
    errors: list[ItemError] = Field(default_factory=list)
    elapsed_s: float = 0.0
    fingerprint: str = ""  # size and modification time of a source file: a changed file cannot be resumed
    jsonl: str = ""  # the JSONL sink this run created: later attempts append to it, and to no other file
    batches: list[ProviderBatch] = Field(default_factory=list)  # batch_api: batches submitted and not yet collected
    cursor: int = 0  # batch_api: items before this position were submitted by `cursor_job` (a resume starts over)
    cursor_job: str = ""

