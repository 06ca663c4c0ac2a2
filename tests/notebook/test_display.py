"""Widgets in a kernel, text elsewhere: the choice, and the bundles each side gets."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator

import pytest

import jobkit
from jobkit.backends import Backend
from jobkit.models import JobState
from jobkit.notebook import dashboard, display, progress_group

from .conftest import steps

WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pretend to run inside an IPython kernel (a shell with a `kernel`)."""
    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    yield


async def test_outside_a_kernel_a_handle_is_one_text_line(memory: Backend) -> None:
    assert not display.use_widgets()
    handle = await jobkit.submit(steps, 10, backend=memory)
    bundle = display.handle_mimebundle(handle)
    assert list(bundle) == ["text/plain"] and bundle["text/plain"].startswith("nb.steps ")
    await handle.wait(timeout=10)


async def test_in_a_kernel_a_handle_is_a_live_widget_with_a_text_fallback(memory: Backend, kernel: None) -> None:
    assert display.use_widgets()
    handle = await jobkit.submit(steps, 300, backend=memory)
    bundle = display.handle_mimebundle(handle)
    assert WIDGET in bundle and "[" in bundle["text/plain"] and "Progress(" not in bundle["text/plain"]
    view = display.recent_views()[-1]
    job = await view.wait(timeout=10)
    assert job.state is JobState.COMPLETED and view.bar.value == 100.0


async def test_group_and_dashboard_go_live_only_in_a_kernel(memory: Backend, kernel: None) -> None:
    handles = [await jobkit.submit(steps, 50, backend=memory) for _ in range(3)]
    group = progress_group(handles)
    dash = dashboard(memory)
    assert group._bg is not None and dash._bg is not None
    await group.wait(timeout=10)
    assert WIDGET in dash._repr_mimebundle_() and dash._repr_mimebundle_()["text/plain"].startswith("jobkit dashboard")
    dash.close()


def test_importing_jobkit_notebook_does_not_import_ipywidgets() -> None:
    code = "import sys, jobkit.notebook; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
