"""Model helpers of the hot paths build the same objects pydantic's validation would."""

from __future__ import annotations

import re

from jobkit.models import Job, JobOptions, new_job, new_job_ids


def test_new_job_is_the_job_validation_builds() -> None:
    options = JobOptions(priority=1, attempts=3)
    built = new_job("id1", "task", "q", {"a": [1]}, options, 100.0, 160.0)
    validated = Job(id="id1", name="task", queue="q", data={"a": [1]}, options=options, created_at=100.0,
                    run_at=160.0)
    assert built.model_dump() == validated.model_dump()
    assert built.model_fields_set == validated.model_fields_set
    built.progress.extra["x"] = 1
    built.note(built.state, 101.0, "touched")
    fresh = new_job("id2", "task", "q", None, options, 1.0, 1.0)
    assert fresh.progress.extra == {} and fresh.history == [], "jobs share nothing mutable"


def test_new_job_ids_are_distinct_hex_ids() -> None:
    ids = new_job_ids(1000)
    assert len(set(ids)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert new_job_ids(0) == []
