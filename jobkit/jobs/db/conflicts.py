"""What to do when a written row's key is already taken: in the table (`on_conflict`) or earlier in the same batch
(`duplicates`); and the counts a batch reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["BatchCounts", "ConflictPolicy", "OnConflict", "Upsert", "conflict_policy"]

OnConflictMode = Literal["error", "skip", "upsert"]
Duplicates = Literal["first", "last", "error"]
AS_IF_ONE_BY_ONE: dict[str, Duplicates] = {"error": "error", "skip": "first", "upsert": "last"}


class Upsert(BaseModel):
    """`{"upsert": ["name", "email"]}`: on a key conflict, update these columns only (the others keep their values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    upsert: list[str] = Field(min_length=1)


OnConflict = OnConflictMode | Upsert


class ConflictPolicy(BaseModel):
    """The whole rule for one destination table: its key, what a conflict with a stored row does, and which of
    several rows of one batch with the same key is written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: OnConflictMode = "error"
    key: tuple[str, ...] = ()  # () = the table's primary key
    update: tuple[str, ...] = ()  # upsert: the columns to update; () = every written column outside the key
    duplicates: Duplicates = "error"

    @model_validator(mode="after")
    def _update_only_for_upsert(self) -> ConflictPolicy:
        if self.update and self.mode != "upsert":
            raise ValueError("update columns apply to on_conflict='upsert' only")
        return self

    @property
    def needs_key(self) -> bool:
        return self.mode != "error" or self.duplicates != "error"


def conflict_policy(on_conflict: OnConflict, key: list[str] | None, duplicates: Duplicates | None) -> ConflictPolicy:
    """The policy a payload's `on_conflict`, `key` and `duplicates` fields describe.

    Without `duplicates`, rows of one batch sharing a key end as if written one by one, in order: the first
    stays under "skip", the last under "upsert", and "error" refuses the batch.
    """
    mode: OnConflictMode = "upsert" if isinstance(on_conflict, Upsert) else on_conflict
    update = tuple(on_conflict.upsert) if isinstance(on_conflict, Upsert) else ()
    return ConflictPolicy(mode=mode, key=tuple(key or ()), update=update,
                          duplicates=duplicates or AS_IF_ONE_BY_ONE[mode])


@dataclass
class BatchCounts:
    """What one committed batch did to the table."""

    inserted: int = 0
    updated: int = 0  # conflicting rows whose values changed
    skipped: int = 0  # conflicting rows left as stored (on_conflict="skip", or "upsert" with nothing to change)
    duplicates: int = 0  # rows dropped because another row of the same batch had their key

    def add(self, other: BatchCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.skipped += other.skipped
        self.duplicates += other.duplicates
