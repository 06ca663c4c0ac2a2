"""Open notebooks/quickstart.ipynb in JupyterLab in headless Chromium, run every cell, and check the bars.

Starts JupyterLab on 127.0.0.1 (free port, random token) in a temporary directory holding a copy of
the notebook, drives Debian's /usr/bin/chromium with Playwright, runs all cells from the Run menu,
waits until every progress bar in the DOM (ipywidgets 8: the width of `.widget-hprogress .progress-bar`)
reads 100 % and every cell has run, and saves a screenshot to .ci/artifacts/quickstart.png.
Exits non-zero, saying why, on any failure.

    .venv/bin/python tests/browser/check_quickstart.py [--timeout 180] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
ARTIFACTS = ROOT / ".ci" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# Read the page: every ipywidgets progress bar's fill, every code cell's prompt, and any traceback shown.
PAGE_STATE_JS = """() => {
  const bars = [...document.querySelectorAll('.widget-hprogress .progress-bar, .widget-progress .progress-bar')]
    .map(b => parseFloat(b.style.width || b.style.height || '0'));
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(p => p.textContent.trim());
  const errors = [...document.querySelectorAll('.jp-OutputArea-output')]
    .map(o => o.textContent).filter(t => t.includes('Traceback') || t.includes('Error:'));
  const status = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const summary = e => (e.split('\\n').filter(l => l.includes('Error')).pop() || e).trim().slice(0, 500);
  return {bars, prompts, errors: errors.map(summary),
          kernel: status ? status.getAttribute('data-status') : null};
}"""


class CheckFailed(Exception):
    """The check found something wrong; the message says what."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Any, timeout: float, every: float = 0.25) -> Any:
    """Poll `check()` until it returns something truthy, or fail after `timeout` seconds saying `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise CheckFailed(f"timed out after {timeout:.0f}s waiting for {what}")


def start_lab(workdir: Path, port: int, token: str, log: Path) -> subprocess.Popen[bytes]:
    """JupyterLab on 127.0.0.1:port serving `workdir`, with nothing that reaches the network."""
    config = workdir / ".config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(config), "JUPYTER_RUNTIME_DIR": str(workdir / ".runtime"),
           "IPYTHONDIR": str(workdir / ".ipython")}
    for var in ("JOBKIT_URL", "REDIS_URL", "JOBKIT_REQUIRE_REDIS"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workdir}",
           "--LabApp.extension_manager=readonly",
           "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate"]
    with log.open("wb") as out:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def lab_answers(port: int, token: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def exited(proc: subprocess.Popen[bytes]) -> bool:
    """False while `proc` runs; raises CheckFailed once it has exited."""
    if proc.poll() is not None:
        raise CheckFailed(f"JupyterLab exited with status {proc.returncode}")
    return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop JupyterLab and the kernels it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def finished(state: dict[str, Any]) -> bool:
    """Every code cell has run, the kernel is idle, and there are bars, all at 100 %."""
    prompts = state["prompts"]
    ran = bool(prompts) and all(p.startswith("[") and p[1:-2].strip().isdigit() for p in prompts)
    return ran and state["kernel"] == "idle" and bool(state["bars"]) and all(b >= 100 for b in state["bars"])


def accept_dialog(page: Any) -> bool:
    """Accept a JupyterLab dialog (such as "Select Kernel") if one shows; True if there was one."""
    button = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
    if not button.count():
        return False
    button.first.click()
    return True


def server_kernel_idle(port: int, token: str) -> bool:
    """True once the server holds a session for the notebook whose kernel is idle."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions?token={token}", timeout=2) as r:
            sessions = json.load(r)
    except OSError:
        return False
    return any(s.get("path", "").endswith(NOTEBOOK.name) and (s.get("kernel") or {}).get("execution_state") == "idle"
               for s in sessions)


def kernel_ready(page: Any, port: int, token: str) -> bool:
    """True once no dialog is up, and the kernel is idle both on the server and in the page.

    The page's indicator reads "idle" before any kernel is connected, so it alone is not enough.
    """
    if accept_dialog(page) or not server_kernel_idle(port, token):
        return False
    return bool(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0)


def drive(port: int, token: str, timeout: float, shot: Path) -> dict[str, Any]:
    """Open the notebook, run all cells, wait for full bars; returns the final page state."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 2600})
            page.goto(f"http://127.0.0.1:{port}/doc/tree/{NOTEBOOK.name}?token={token}", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            wait_until("the kernel to be ready", lambda: kernel_ready(page, port, token), 60)
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
            state: dict[str, Any] = {"moving": False}

            def check() -> bool:
                accept_dialog(page)  # running with no kernel yet asks which kernel to start
                state.update(page.evaluate(PAGE_STATE_JS))
                if state["errors"]:
                    raise CheckFailed(f"a cell failed: {state['errors'][0]}")
                state["moving"] = state["moving"] or any(0 < b < 100 for b in state["bars"])
                return finished(state)

            try:
                wait_until("every cell to run and every progress bar to reach 100 %", check, timeout, every=0.5)
            except CheckFailed as exc:
                raise CheckFailed(f"{exc}; the page showed {json.dumps(state)}") from None
            finally:
                page.locator(".jp-NotebookPanel").screenshot(path=str(shot))
            if not state["moving"]:
                raise CheckFailed("the bars were never seen between 0 and 100 %: they did not move live")
            return state
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the bars (default 180)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory, to read the logs")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"check_quickstart: {CHROMIUM} is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "quickstart.png"
    workdir = Path(tempfile.mkdtemp(prefix="jobkit-browser-"))
    shutil.copy(NOTEBOOK, workdir / NOTEBOOK.name)
    port, token = free_port(), secrets.token_hex(16)
    log = workdir / "jupyterlab.log"
    started = time.monotonic()
    lab = start_lab(workdir, port, token, log)
    try:
        wait_until("JupyterLab to answer", lambda: lab_answers(port, token) or exited(lab), 90)
        state = drive(port, token, args.timeout, shot)
    except Exception as exc:  # noqa: BLE001 - report any failure as the check's result
        print(f"check_quickstart: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"check_quickstart: screenshot {shot if shot.exists() else '(none)'}; JupyterLab log tail:",
              file=sys.stderr)
        print(log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)", file=sys.stderr)
        return 1
    finally:
        stop(lab)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"check_quickstart: ok in {time.monotonic() - started:.1f}s: {len(state['bars'])} progress bars at 100 %, "
          f"{len(state['prompts'])} cells run; screenshot {shot.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
