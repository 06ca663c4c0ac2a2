"""Drive the /ui dashboard in headless Chromium: log in, watch a running job's bar move live, cancel a job, check
that hostile markup in a job stays text and that a read-only token sees no actions; screenshots as artefacts.

Starts, on 127.0.0.1 with a throwaway SQLite file, a `jobkit worker` for tests/browser/ui_tasks.py and
`jobkit serve` with a tokens file (an admin token and an owner's), then drives Debian's /usr/bin/chromium with
Playwright. Saves .ci/artifacts/ui-home.png and ui-job.png. Exits non-zero, saying why, on any failure.

    .venv/bin/python tests/browser/check_ui.py [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from check_quickstart import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ROOT, CheckFailed, free_port, stop, wait_until

import jobkit

HERE = Path(__file__).resolve().parent
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
QUEUE = "ui-demo"


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)])}
    for var in ("JOBKIT_URL", "REDIS_URL", "JOBKIT_REQUIRE_REDIS"):
        env.pop(var, None)
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


async def seed(url: str) -> dict[str, str]:
    """The jobs the check looks at: two long ones (one to watch, one to cancel), quick ones, a hostile failure."""
    backend = await jobkit.connect(url)
    try:
        q = jobkit.Queue(QUEUE, backend=backend)
        quick = await q.add_bulk("ui_quick", [{"n": i} for i in range(5)])
        bad = await q.add("ui_fail", {"why": XSS, "note": XSS}, job_id="hostile")
        quick.append(await q.add("ui_quick", {"n": "mine"}, job_id="readers-own", owner="reader"))
        watch = await q.add("ui_crawl", {"steps": 600, "pause": 0.25}, job_id="watch-me")
        victim = await q.add("ui_crawl", {"steps": 600, "pause": 0.25}, job_id="cancel-me")
        for job in [*quick, bad]:
            await (await q.handle(job.id)).wait(timeout=30)
        return {"watch": watch.id, "victim": victim.id, "bad": bad.id}
    finally:
        await backend.close()


async def state_of(url: str, job_id: str) -> str:
    backend = await jobkit.connect(url)
    try:
        job = await jobkit.Queue(QUEUE, backend=backend).get(job_id)
        return job.state.value if job else "missing"
    finally:
        await backend.close()


def percent(page: Any) -> float:
    return float(page.eval_on_selector("#live progress", "p => p.value"))


def log_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/ui/")
    page.wait_for_selector("form.login")
    page.fill("input[name=token]", token)
    page.click("form.login button")
    page.wait_for_selector("table.queues")


def drive(base: str, tokens: dict[str, str], ids: dict[str, str]) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    seen: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda dialog: dialog.accept())
            log_in(page, base, tokens["admin"])
            row = page.locator(f"tr[data-queue='{QUEUE}']")
            seen["completed"] = int(row.locator("td.num a").nth(4).inner_text())
            if seen["completed"] != 6:
                raise CheckFailed(f"the queue row shows {seen['completed']} completed jobs, not 6")
            page.evaluate("window.__same_page = true")
            listed = f"tr[data-job='{ids['watch']}'] progress"
            in_list = float(page.eval_on_selector(listed, "p => p.value"))
            seen["list"] = [in_list, wait_until("the list to refresh itself", lambda: (
                v := float(page.eval_on_selector(listed, "p => p.value"))) > in_list and v, 20)]
            if not page.evaluate("window.__same_page"):
                raise CheckFailed("the page reloaded: the list did not refresh in place")
            page.screenshot(path=str(ARTIFACTS / "ui-home.png"), full_page=True)

            page.goto(f"{base}/ui/job?queue={QUEUE}&id={ids['bad']}")
            page.wait_for_selector("#traceback")
            if page.evaluate("window.__xss") is not None:
                raise CheckFailed("hostile markup in a job ran as script")
            if json.dumps(XSS) not in page.inner_text("#payload") or XSS not in page.inner_text("#error"):
                raise CheckFailed("hostile markup in a job was not shown as text")

            page.goto(f"{base}/ui/job?queue={QUEUE}&id={ids['watch']}")
            page.wait_for_selector("#live[data-events]")
            page.evaluate("window.__same_page = true")  # gone if the page reloads: the bar must move by itself
            first = wait_until("the watched job to start", lambda: percent(page) > 0 and percent(page), 30)
            later = wait_until("its bar to move", lambda: percent(page) >= first + 2 and percent(page), 20)
            if not page.evaluate("window.__same_page"):
                raise CheckFailed("the page reloaded: the bar did not move live")
            seen["bar"] = [first, later]
            page.screenshot(path=str(ARTIFACTS / "ui-job.png"), full_page=True)

            page.goto(f"{base}/ui/job?queue={QUEUE}&id={ids['victim']}")
            wait_until("the job to cancel to start", lambda: percent(page) > 0, 30)
            page.click("button[data-action=cancel]")
            page.wait_for_selector("#job-state.state-cancelled", timeout=30_000)

            reader = browser.new_page()
            log_in(reader, base, tokens["reader"])
            seen["reader_buttons"] = reader.locator("[data-action]").count()
            if seen["reader_buttons"]:
                raise CheckFailed("a read-only token sees action buttons")
            rows = reader.eval_on_selector_all("tr[data-job]", "rows => rows.map(r => r.dataset.job)")
            if rows != ["readers-own"]:
                raise CheckFailed(f"an owner token sees jobs {rows}, not only its own ['readers-own']")
            return seen
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory, to read the logs")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"check_ui: {CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="jobkit-ui-"))
    url, port = f"sqlite:///{workdir / 'jobs.db'}", free_port()
    base = f"http://127.0.0.1:{port}"
    tokens = {"admin": secrets.token_urlsafe(24), "reader": secrets.token_urlsafe(24)}
    (workdir / "tokens.json").write_text(json.dumps({"tokens": [
        {"sha256": hashlib.sha256(tokens["admin"].encode()).hexdigest(), "admin": True},
        {"sha256": hashlib.sha256(tokens["reader"].encode()).hexdigest(), "owner": "reader"}]}))
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    logs = [workdir / "worker.log", workdir / "server.log"]
    try:
        worker = [sys.executable, "-m", "jobkit", "worker", "--url", url, "-c", "4", "--grace", "1", "ui_tasks"]
        procs.append(start(worker, logs[0]))
        procs.append(start([sys.executable, "-m", "jobkit", "serve", "--url", url, "--host", "127.0.0.1", "--port",
                            str(port), "--tokens", str(workdir / "tokens.json"), "ui_tasks"], logs[1]))
        wait_until("the server to answer", lambda: answers(f"{base}/ui/login"), 30)
        ids = asyncio.run(seed(url))
        seen = drive(base, tokens, ids)
        seen["cancelled"] = asyncio.run(state_of(url, ids["victim"]))
        if seen["cancelled"] != "cancelled":
            raise CheckFailed(f"the page said cancelled, the backend says {seen['cancelled']}")
    except Exception as exc:  # noqa: BLE001 - report any failure as the check's result
        print(f"check_ui: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        for log in logs:
            print(f"--- {log.name} tail:\n{log.read_text(errors='replace')[-2000:] if log.exists() else '(none)'}",
                  file=sys.stderr)
        return 1
    finally:
        for proc in procs:
            stop(proc)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"check_ui: ok in {time.monotonic() - started:.1f}s: list refreshed {seen['list'][0]:.1f} ->"
          f" {seen['list'][1]:.1f} %, bar moved {seen['bar'][0]:.1f} -> {seen['bar'][1]:.1f} %"
          f" live, cancel -> {seen['cancelled']}, hostile markup inert, read-only sees {seen['reader_buttons']}"
          f" buttons and its own job only; screenshots .ci/artifacts/ui-home.png, ui-job.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
