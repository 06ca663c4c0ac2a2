"""ai_batch end to end against a real HTTP server on loopback: sections, structured output, sinks, sources, prices."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook  # type: ignore[import-untyped]

import jobkit
import jobkit.jobs
from jobkit.backends import Backend
from jobkit.jobs.ai import register_python_sink
from jobkit.jobs.ai.testing import FakeLLM

from .ai_helpers import MODEL, batch, llm, price, rows

__all__ = ["llm"]


async def test_sections_and_structured_output_into_sqlite(any_backend: Backend, llm: FakeLLM, file_roots: Path) -> None:
    payload = batch(4, keep=["term"], system="You write for a glossary.", sections={
        "intro": {"prompt": "Write an intro about {term}"},
        "meta": {"prompt": "Describe {term}", "response_model": "Blurb"}})
    report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=any_backend, timeout=60)
    assert (report.items_total, report.items_ok, report.items_failed, report.items_left) == (4, 4, 0, 0)
    found = rows(file_roots / "out.db", columns="key, term, intro, meta, model, tokens_in, tokens_out, cost")
    assert [r[0] for r in found] == [f"term-{i}" for i in range(4)]
    _, term, intro, meta, model, tokens_in, tokens_out, cost = found[0]
    assert term == "term-0" and intro == "Generated text for: Write an intro about term-0" and model == MODEL
    assert json.loads(meta) == {"title": "title of Describe term-0", "words": 1}
    assert report.calls == llm.calls == 8 and tokens_in > 0 and tokens_out > 0 and cost > 0
    # every token the server billed is in the report, and priced as the price table says
    assert report.tokens_in == sum(b.prompt_tokens for b in llm.billed)
    assert report.tokens_out == sum(b.completion_tokens for b in llm.billed)
    assert report.tokens_cached == sum(b.cached_tokens for b in llm.billed) > 0
    assert report.cost == pytest.approx(llm.cost(price), rel=1e-6)
    assert report.cost_by_model[MODEL].calls == 8


async def test_cached_tokens_are_priced_at_the_cached_rate(memory: Backend, llm: FakeLLM) -> None:
    """The server reports a repeated system prompt as cached: those tokens cost half, not the full input price."""
    system = "You write for a glossary. " * 40
    report = await jobkit.run(jobkit.jobs.ai_batch, batch(3, system=system, concurrency=1), backend=memory, timeout=60)
    cached = report.tokens_cached
    assert cached > 0 and cached == sum(b.cached_tokens for b in llm.billed)
    full = price(report.tokens_in, 0, report.tokens_out)
    assert report.cost == pytest.approx(full - cached * 0.075 / 1_000_000, rel=1e-6)  # gpt-4o-mini: 0.15 vs 0.075


async def test_jsonl_sink_and_a_python_sink(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    report = await jobkit.run(jobkit.jobs.ai_batch, batch(3, sink="jsonl:///gen.jsonl"), backend=memory, timeout=60)
    lines = [json.loads(x) for x in (file_roots / "gen.jsonl").read_text().splitlines()]
    assert sorted(x["key"] for x in lines) == ["term-0", "term-1", "term-2"] and report.items_ok == 3
    assert all(x["run"] == report.run and x["intro"].startswith("Generated text") for x in lines)

    got: list[dict[str, Any]] = []
    register_python_sink(got.extend, "collect_rows")
    await jobkit.run(jobkit.jobs.ai_batch, batch(3, sink="python:collect_rows", batch_size=2), backend=memory,
                     timeout=60)
    assert sorted(r["key"] for r in got) == ["term-0", "term-1", "term-2"]


async def test_a_jsonl_file_the_run_did_not_create_is_never_appended_to(memory: Backend, llm: FakeLLM,
                                                                        file_roots: Path) -> None:
    (file_roots / "taken.jsonl").write_text('{"keep": "me"}\n')
    with pytest.raises(jobkit.JobFailed, match="already exists, and a batch never appends"):
        await jobkit.run(jobkit.jobs.ai_batch, batch(2, sink="jsonl:///taken.jsonl"), backend=memory, timeout=60)
    assert (file_roots / "taken.jsonl").read_text() == '{"keep": "me"}\n' and llm.calls == 0


@pytest.mark.parametrize("kind", ["sqlite", "jsonl", "excel"])
async def test_items_from_a_source_file(memory: Backend, llm: FakeLLM, file_roots: Path, kind: str) -> None:
    terms = [f"word {i}" for i in range(5)]
    if kind == "sqlite":
        with sqlite3.connect(file_roots / "terms.db") as conn:
            conn.execute("CREATE TABLE terms (term TEXT, note TEXT)")
            conn.executemany("INSERT INTO terms VALUES (?, ?)", [(t, "n") for t in terms])
        conn.close()
        source = {"kind": "sqlite", "path": "terms.db", "table": "terms"}
    elif kind == "jsonl":
        (file_roots / "terms.jsonl").write_text("".join(json.dumps({"term": t}) + "\n" for t in terms))
        source = {"kind": "jsonl", "path": "terms.jsonl"}
    else:
        wb = Workbook()
        ws = wb.active
        ws.title = "Terms"
        ws.append(["term", "note"])
        for t in terms:
            ws.append([t, "n"])
        wb.save(file_roots / "terms.xlsx")
        source = {"kind": "excel", "path": "terms.xlsx", "sheet": "Terms"}
    payload = batch(0, source=source)
    del payload["items"]
    report = await jobkit.run(jobkit.jobs.ai_batch, payload, backend=memory, timeout=60)
    assert report.items_total == report.items_ok == 5
    assert [r[0] for r in rows(file_roots / "out.db")] == terms


async def test_jinja2_templates_are_sandboxed(memory: Backend, llm: FakeLLM, file_roots: Path) -> None:
    ok = batch(2, template="jinja2", sections={"intro": {"prompt": "About {{ term | upper }}"}})
    await jobkit.run(jobkit.jobs.ai_batch, ok, backend=memory, timeout=60)
    assert rows(file_roots / "out.db", columns="intro")[0] == ("Generated text for: About TERM-0",)
    hostile = batch(1, template="jinja2", sink="sqlite:///other.db?table=gen",
                    sections={"intro": {"prompt": "{{ term.__class__.__mro__[1].__subclasses__() }}"}})
    report = await jobkit.run(jobkit.jobs.ai_batch, hostile, backend=memory, timeout=60)
    assert report.items_failed == 1 and "unsafe" in report.errors[0].message


async def test_ai_generate_one_answer(memory: Backend, llm: FakeLLM) -> None:
    result = await jobkit.run(jobkit.jobs.ai_generate, {"model": MODEL, "prompt": "Describe {term}",
                                                        "item": {"term": "queue"}, "response_model": "Blurb"},
                              backend=memory, timeout=60)
    assert result.data == {"title": "title of Describe queue", "words": 1} and result.calls == 1
    assert result.cost == pytest.approx(llm.cost(price), rel=1e-6)
