"""Every notebook in notebooks/ runs top to bottom in a real kernel, on the SQLite default, offline.

Widget updates made by background tasks may be missing from the widget state nbclient saves
(ipykernel >= 7 keeps the parent header in a contextvar), so a last cell, run in the same kernel,
reads the views' widgets and prints them; the test asserts on that as well as on the outputs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"

INSPECT = """
import json
from jobkit.notebook.display import recent_views

def _describe(view):
    kind = type(view).__name__
    if kind == "JobView":
        return {"kind": kind, "bar": view.bar.value, "state": view.job.state.value, "watching": view.watching,
                "renders": view.renders, "frontend_value": view.bar.get_state()["value"],
                "meters": {name: [bar.value, bar.max] for name, (bar, _) in view.extras.meters.items()}}
    if kind == "GroupView":
        return {"kind": kind, "bar": view.bar.value, "states": [j.state.value for j in view.jobs],
                "lines": [line.bar.value for line in view.lines.values()], "renders": view.renders}
    return {"kind": kind, "refreshes": view.refreshes, "queues": sorted(view.counts), "status": view.status}

for _view in recent_views():  # a view stops following its job a moment after it shows the end: wait (bounded)
    if type(_view).__name__ == "JobView" and _view.job.finished:
        await _view.wait(10)

print("JOBKIT-VIEWS " + json.dumps([_describe(v) for v in recent_views()]))
"""


def text_of(cell: Any) -> str:
    """Everything a code cell printed or returned, as plain text. A stream the kernel sent in several pieces is
    joined as printed; other outputs go on a line of their own."""
    parts: list[str] = []
    last_stream = None
    for out in cell.outputs:
        if out.output_type == "stream":
            if last_stream == out.name:
                parts[-1] += out.text
            else:
                parts.append(out.text)
            last_stream = out.name
            continue
        last_stream = None
        if out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
    return "\n".join(parts)


def views_printed(cell: Any) -> list[dict[str, Any]]:
    line = next(ln for ln in text_of(cell).splitlines() if ln.startswith("JOBKIT-VIEWS "))
    return json.loads(line.removeprefix("JOBKIT-VIEWS "))  # type: ignore[no-any-return]


def test_jobkit_exposes_the_notebook_hooks() -> None:
    """The notebooks rely on these; they live in jobkit/__init__.py and jobkit/handle.py."""
    import jobkit

    missing = [name for name, ok in [
        ("JobHandle._repr_mimebundle_ (delegating to jobkit.notebook.display.handle_mimebundle)",
         hasattr(jobkit.JobHandle, "_repr_mimebundle_")),
        ("jobkit.progress_group", hasattr(jobkit, "progress_group")),
        ("jobkit.dashboard", hasattr(jobkit, "dashboard")),
    ] if not ok]
    assert not missing, f"jobkit lacks {', '.join(missing)}: the notebooks cannot show live views without them"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, kernel_env: str) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs saved"
    nb.cells.append(nbformat.v4.new_code_cell(INSPECT))
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name=kernel_env, timeout=120, allow_errors=False,
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()

    for cell in code:
        assert not any(o.output_type == "error" for o in cell.outputs), text_of(cell)
        assert "Traceback" not in text_of(cell)
        for out in cell.outputs:
            if out.output_type in ("execute_result", "display_data") and WIDGET in out.data:
                assert "Progress(" not in out.data["text/plain"] and "VBox(" not in out.data["text/plain"]
    assert (workdir / ".jobkit" / "jobs.db").exists(), "the notebook did not use the SQLite default"

    views = views_printed(nb.cells[-1])
    jobs = [v for v in views if v["kind"] == "JobView"]
    groups = [v for v in views if v["kind"] == "GroupView"]
    assert jobs and all(v["bar"] == 100.0 and v["frontend_value"] == 100.0 and v["state"] == "completed"
                        and not v["watching"] for v in jobs), views
    assert all(v["bar"] == 100.0 and set(v["states"]) == {"completed"} for v in groups), views
    assert all(v["refreshes"] >= 1 and not v["status"].endswith("failed") for v in views if v["kind"] == "Dashboard")
    widgets_saved = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    assert any(m["model_name"] == "FloatProgressModel" for m in widgets_saved.get("state", {}).values())
    check_outputs(path.name, code, views)
    assert_ignored_beside(path, workdir)


def assert_ignored_beside(path: Path, workdir: Path) -> None:
    """What the notebook made beside itself (run in `workdir`) is ignored by git where the notebook lives, so running
    it in notebooks/ leaves `git status` clean."""
    made = sorted(str((path.parent / p.relative_to(workdir)).relative_to(ROOT)) for p in workdir.rglob("*")
                  if p.is_file())
    assert made, "the notebook made no file, not even its jobs database"
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot ask git what it ignores")
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(made),
                             capture_output=True, text=True, timeout=60).stdout.split()
    assert sorted(ignored) == made, f"{path.name} leaves files git would show: {sorted(set(made) - set(ignored))}"


def check_outputs(name: str, code: list[Any], views: list[dict[str, Any]]) -> None:
    """What each notebook must show, beyond running cleanly."""
    texts = [text_of(c) for c in code]
    if name == "excel_import.ipynb":  # files in data/, the default file root; the model registered by name
        # Saved for readers without widgets (GitHub, nbviewer): how the import ended, not how it started.
        assert "100.0% completed" in texts[2], texts[2]
        assert texts[3].startswith("read 20,000, imported 19,980, rejected 20 in "), texts[3]
        assert texts[4].startswith("19980\n"), texts[4]
        assert texts[5].startswith("('Row', 'ID', 'Name', 'Email', 'Signup', 'Balance', 'Active', 'Reason')"), texts[5]
        assert "upload.xlsx is a text file (CSV or similar)" in texts[6], texts[6]
        return
    if name == "ai_batch.ipynb":  # a loopback server the notebook starts; the cost bar against the limit
        assert texts[0] == "provider ready\n", texts[0]
        assert "100.0% completed · 40 of 40 items" in texts[1], texts[1]
        assert texts[2].startswith("40 of 40 items, 80 calls, ") and "cached" in texts[2], texts[2]
        assert texts[3].startswith("40\n\n('0',\n 'queue',"), texts[3]
        assert texts[4].startswith("cost_limit ") and "to go on from here" in texts[4], texts[4]
        assert texts[5] == "None 40 40 40\n", "resumed: every item once in the JSONL sink"
        assert texts[6].startswith("8 8 $") and texts[6].endswith(" files uploaded: 1\n"), texts[6]
        assert texts[7] == "calls the server answered: 128\n", "none paid for twice, 8 in the batch"
        [cost, limit] = views[0]["meters"]["cost"]
        assert 0 < cost < limit == 1.0, views
        return
    if name == "db_insert_export.ipynb":  # conflicts resolved and counted, a refused conflict, an export read back
        assert "100.0% completed" in texts[1] and "20,000 inserted" in texts[1], texts[1]
        assert texts[2].startswith("inserted 20,000, updated 0, skipped 0 in 10 batches"), texts[2]
        assert texts[3].startswith("inserted 5,000, updated 2,000, skipped 3,000, duplicates 1\nbatch=1 "), texts[3]
        assert texts[4] == "25000\n(24000, 'Customer 24000', 'new-address@example.com', 'team', 3)\n", texts[4]
        assert texts[5].startswith("InsertRejected: table 'customers' already holds rows") and "id=7" in texts[5]
        assert "100.0% completed" in texts[6] and texts[7].startswith("1,834 rows, "), texts[7]
        assert texts[8].startswith("('id', 'name', 'email', 'seats')\n(149, 'Customer 149'"), texts[8]
        assert [v["kind"] for v in views] == ["JobView", "JobView"]
        return
    if name == "email.ipynb":  # a loopback SMTP server the notebook starts; a 4xx retried, a 5xx recorded
        assert texts[0] == "smtp server ready\n", texts[0]
        assert "100.0% completed" in texts[1] and "3 of 5 sent" in texts[1], texts[1]
        assert texts[2].startswith("3 sent, 1 failed, 1 skipped of 5\n"), texts[2]
        assert "gone@example.com         failed   550  5.1.1 no such mailbox" in texts[2], texts[2]
        assert "greylisted@example.com   sent" in texts[2] and "the same address as recipient 0" in texts[2]
        assert texts[3] == ("March report for <Bob & Co>\n<p>Hello <b>&lt;Bob &amp; Co&gt;</b>,</p><p>17 tickets in"
                            " March.</p>\nHello <Bob & Co>,\n17 tickets in March.\n['march.csv'] True\n"), texts[3]
        assert texts[4] == "messages the server accepted: 3\n", texts[4]
        return
    if name == "analytics.ipynb":  # a year by day and country, a bar per month, totals, a plot, the same flow again
        assert texts[0] == "150,000 events in data/events.db\n", texts[0]
        assert texts[1].count("100.0% completed") == 13 and "2,196 rows from 12 of 12 partitions" in texts[1], texts[1]
        assert texts[2].startswith("2,196 rows from 12 of 12 partitions on sqlite, 2,196 upserted into"
                                   " daily_by_country; missing: []\n{'period': '2024-01-01T00:00:00+01:00', 'country':"
                                   " 'BR', 'count': "), texts[2]
        assert texts[3].startswith("BR ") and len(texts[3].splitlines()) == 6, texts[3]
        assert any("image/png" in o.get("data", {}) for o in code[4].outputs), "the plot is shown inline"
        assert texts[5].startswith("True 2196\n") and "100.0% completed" in texts[5], texts[5]
        assert [v["kind"] for v in views] == ["GroupView", "JobView"]
        assert len(views[0]["lines"]) == 13, "the parent and its 12 partitions"
        return
    if name != "quickstart.ipynb":
        return
    assert texts[1] == "55"  # await jobkit.run(crunch, 10)
    assert texts[2].startswith("crunch ") and any(WIDGET in o.data for o in code[2].outputs)  # handle shows itself
    assert "100.0% completed" in texts[2] and "chunk 30/30" in texts[2], texts[2]  # the saved text: how it ended
    assert texts[3] == "15"  # run_sync inside the kernel's loop
    assert any(WIDGET in o.data for o in code[4].outputs)  # progress_group
    assert texts[4].count("100.0% completed") == 4, texts[4]
    assert texts[5].startswith("jobkit dashboard") and any(WIDGET in o.data for o in code[5].outputs)
    # a flow: its parent and its three children, each shown as it ended (the parent with its children's count)
    assert any(WIDGET in o.data for o in code[6].outputs)
    assert texts[6].count("100.0% completed") == 4 and "3 of 3 children ended" in texts[6], texts[6]
    assert texts[7] == "[465, 55, 210, 465, 820, 190]"
    assert [v["kind"] for v in views] == ["JobView", "GroupView", "Dashboard", "GroupView"]
    assert views[2]["queues"] == ["quickstart"]
    assert len(views[3]["lines"]) == 4
