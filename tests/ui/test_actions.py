"""Admin actions from the dashboard (cancel, retry, pause, resume, retry failed, clean); refused for everyone else."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from jobkit import JobState, Queue
from jobkit.backends import Backend
from tests.ui.conftest import Browser
from tests.ui.work import drain


def notice(response: object) -> tuple[str, str]:
    location = urlsplit(response.headers["location"])  # type: ignore[attr-defined]
    query = parse_qs(location.query)
    return location.path, query["notice"][0]


async def test_read_only_viewers_see_no_buttons_and_their_posts_are_refused(
    store: Backend, browse: Callable[[str | None], Browser]
) -> None:
    q = Queue("ui-act", backend=store)
    job = await q.add("ui_echo", {"say": "x"})
    alice = browse("alice-token")
    page = await alice.page("/")
    assert page.status_code == 200 and "data-action" not in page.text and "read-only · alice" in page.text
    assert 'data-action="cancel"' in (await browse("admin-token").page("/")).text
    csrf = alice.csrf()
    for path, form in [("/job/cancel", {"id": job.id}), ("/job/retry", {"id": job.id}), ("/queue/pause", {}),
                       ("/queue/clean", {"state": "waiting"}), ("/queue/retry-failed", {})]:
        r = await alice.post(path, queue=q.name, csrf=csrf, **form)
        assert r.status_code == 403 and "read-only" in r.text, path
        r = await browse(None).post(path, queue=q.name, **form)
        assert r.status_code == 401, path
    assert (await q.get(job.id)).state is JobState.WAITING  # type: ignore[union-attr]
    assert not (await q.counts()).paused


async def test_an_action_without_the_pages_csrf_token_is_refused(
    store: Backend, browse: Callable[[str | None], Browser]
) -> None:
    q = Queue("ui-act", backend=store)
    job = await q.add("ui_echo", {"say": "x"})
    admin = browse("admin-token")
    for csrf in ("", "0" * 32, browse("alice-token").csrf()):
        r = await admin.post("/job/cancel", queue=q.name, id=job.id, csrf=csrf)
        assert r.status_code == 403 and "stale" in r.text
    assert (await q.get(job.id)).state is JobState.WAITING  # type: ignore[union-attr]


async def test_a_post_from_another_site_is_refused(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    q = Queue("ui-act", backend=store)
    job = await q.add("ui_echo", {"say": "x"})
    admin = browse("admin-token")
    evil = {"origin": "https://evil.example"}
    r = await admin.http.post("/job/cancel", data={"queue": q.name, "id": job.id, "csrf": admin.csrf()}, headers=evil)
    assert r.status_code == 403 and "this site&#39;s own pages" in r.text
    r = await browse(None).http.post("/login", data={"token": "admin-token"}, headers=evil)
    assert r.status_code == 403 and "jobkit_token" not in r.cookies
    assert (await q.get(job.id)).state is JobState.WAITING  # type: ignore[union-attr]
    r = await admin.http.post("/job/cancel", data={"queue": q.name, "id": job.id, "csrf": admin.csrf()},
                              headers={"origin": "http://ui.test"})
    assert r.status_code == 303 and (await q.get(job.id)).state is JobState.CANCELLED  # type: ignore[union-attr]


async def test_admin_cancels_and_retries_a_job(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    q = Queue("ui-act", backend=store)
    job = await q.add("ui_echo", {"say": "x"})
    admin = browse("admin-token")
    back = f"/job?queue={q.name}&id={job.id}"
    r = await admin.post("/job/cancel", queue=q.name, id=job.id, csrf=admin.csrf(), back=back)
    assert r.status_code == 303 and notice(r) == ("/job", "cancelled")
    assert (await q.get(job.id)).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert "Job cancelled." in (await admin.http.get(r.headers["location"])).text
    r = await admin.post("/job/retry", queue=q.name, id=job.id, csrf=admin.csrf(), back=back)
    assert notice(r) == ("/job", "retried")
    assert (await q.get(job.id)).state is JobState.WAITING  # type: ignore[union-attr]
    r = await admin.post("/job/retry", queue=q.name, id=job.id, csrf=admin.csrf())
    assert notice(r) == ("/", "not-retried")
    r = await admin.post("/job/cancel", queue=q.name, id="nope", csrf=admin.csrf())
    assert r.status_code == 404 and "There is no job" in r.text
    r = await admin.post("/job/explode", queue=q.name, id=job.id, csrf=admin.csrf())
    assert r.status_code == 404 and "Unknown action" in r.text


async def test_admin_pauses_resumes_retries_failed_and_cleans(
    store: Backend, browse: Callable[[str | None], Browser]
) -> None:
    q = Queue("ui-act", backend=store)
    failed = [await q.add("ui_boom", {"why": str(i)}) for i in range(2)]
    done = await q.add("ui_echo", {"say": "ok"})
    await drain(store, *failed, done)
    admin = browse("admin-token")
    r = await admin.post("/queue/pause", queue=q.name, csrf=admin.csrf())
    assert notice(r) == ("/", "pause") and (await q.counts()).paused
    assert 'data-action="resume"' in (await admin.page("/")).text
    r = await admin.post("/queue/resume", queue=q.name, csrf=admin.csrf())
    assert notice(r) == ("/", "resume") and not (await q.counts()).paused
    r = await admin.post("/queue/clean", queue=q.name, state="completed", csrf=admin.csrf())
    assert "1 job(s) removed." in (await admin.http.get(r.headers["location"])).text
    assert await q.get(done.id) is None
    r = await admin.post("/queue/clean", queue=q.name, state="waiting", csrf=admin.csrf())
    assert r.status_code == 400 and "finished" in r.text
    await q.pause()  # so the retried jobs stay waiting where the test can count them
    r = await admin.post("/queue/retry-failed", queue=q.name, csrf=admin.csrf())
    assert "2 failed job(s) sent back to waiting." in (await admin.http.get(r.headers["location"])).text
    counts = await q.counts()
    assert (counts.waiting, counts.failed) == (2, 0)


@pytest.mark.parametrize("queue", ["", "bad{name}"])
async def test_an_invalid_queue_name_is_refused(queue: str, browse: Callable[[str | None], Browser]) -> None:
    admin = browse("admin-token")
    r = await admin.post("/queue/pause", queue=queue, csrf=admin.csrf())
    assert r.status_code == 400 and "invalid queue name" in r.text


async def test_logout_forgets_the_token(browse: Callable[[str | None], Browser]) -> None:
    alice = browse("alice-token")
    r = await alice.post("/logout", csrf=alice.csrf())
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "jobkit_token" not in alice.http.cookies
    assert (await alice.page("/")).status_code == 303
