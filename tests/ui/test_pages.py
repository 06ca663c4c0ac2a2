"""The dashboard's pages: login, queues with counts and throughput, job search, the job page, escaping."""

from __future__ import annotations

import re
from collections.abc import Callable

from markupsafe import escape

from jobkit import Queue
from jobkit.backends import Backend
from jobkit.serve.ui.spark import points
from tests.ui.conftest import Browser
from tests.ui.work import drain

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


async def test_login_is_required_and_a_bad_token_refused(browse: Callable[[str | None], Browser]) -> None:
    anon = browse(None)
    r = await anon.page("/", queue="x")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2F%3Fqueue%3Dx"
    r = await anon.post("/login?next=/", token="wrong")
    assert r.status_code == 401 and "not recognised" in r.text and "jobkit_token" not in r.cookies
    r = await anon.post("/login?next=/?queue=x", token="alice-token")
    assert r.status_code == 303 and r.headers["location"] == "/?queue=x"
    assert r.cookies["jobkit_token"] == "alice-token"
    set_cookie = r.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    assert (await anon.page("/")).status_code == 200


async def test_login_never_redirects_off_the_dashboard(browse: Callable[[str | None], Browser]) -> None:
    anon = browse(None)
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        r = await anon.http.post("/login", params={"next": target}, data={"token": "admin-token"})
        assert r.headers["location"] == "/", target


async def test_queues_show_counts_and_throughput(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    q = Queue("ui-work", backend=store)
    jobs = await q.add_bulk("ui_echo", [{"say": str(i)} for i in range(3)])
    await drain(store, *jobs, await q.add("ui_boom", {"why": "no"}))
    await Queue("ui-idle", backend=store).add("ui_echo", {"say": "later"})
    page = (await browse("admin-token").page("/")).text
    row = re.search(r'<tr data-queue="ui-work">.*?</tr>', page, re.S)
    assert row is not None
    cells = re.findall(r'state=([a-z-]+)">(\d+)</a>', row.group(0))
    assert dict(cells) == {"waiting": "0", "delayed": "0", "active": "0", "waiting-children": "0",
                           "completed": "3", "failed": "1", "cancelled": "0"}
    assert re.search(r'<span class="num">0\.1</span>', row.group(0))  # 4 finished in the last 30 minutes
    title = re.search(r"<title>4 finished in the last 30 minutes, per minute: ([\d ]+)</title>", row.group(0))
    assert title is not None and sum(map(int, title.group(1).split())) == 4
    drawn = re.search(r'<polyline points="([^"]+)"', row.group(0))
    assert drawn is not None and "1.0" in {xy.split(",")[1] for xy in drawn.group(1).split()}  # the peak drawn
    assert '<td class="num">75 %</td>' in row.group(0)  # 3 of the 4 completed
    assert re.search(r'<td class="num">\d+\.\ds</td>', row.group(0))  # the p95 run time, from the metrics
    assert 'data-queue="ui-idle"' in page


async def test_search_by_id_state_and_task(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    await Queue("ui-a", backend=store).add("ui_echo", {"say": "a"}, job_id="shared-id")
    await Queue("ui-b", backend=store).add("ui_echo", {"say": "b"}, job_id="shared-id")
    await Queue("ui-b", backend=store).add("ui_boom", {"why": "b"}, job_id="other")
    await Queue("ui-b", backend=store).cancel("other")
    b = browse("admin-token")

    def listed(text: str) -> list[tuple[str, str]]:
        return re.findall(r'<a href="/job\?queue=([^&]+)&amp;id=([^"]+)">', text)

    assert sorted(listed((await b.page("/", id="shared-id")).text)) == [("ui-a", "shared-id"), ("ui-b", "shared-id")]
    assert listed((await b.page("/", id="shared-id", queue="ui-b")).text) == [("ui-b", "shared-id")]
    assert listed((await b.page("/", state="cancelled")).text) == [("ui-b", "other")]
    assert listed((await b.page("/", task="ui_boom")).text) == [("ui-b", "other")]
    assert listed((await b.page("/", task="nothing")).text) == []
    r = await b.page("/", state="sleeping")
    assert r.status_code == 400 and "unknown state &#39;sleeping&#39;: choose one of waiting" in r.text


async def test_pages_of_jobs_across_queues(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    for i in range(5):
        await Queue(f"ui-p{i % 2}", backend=store).add("ui_echo", {"say": str(i)}, job_id=f"job-{i}")
    b = browse("admin-token")
    first = re.findall(r'data-job="([^"]+)"', (await b.page("/", limit="2")).text)
    second = re.findall(r'data-job="([^"]+)"', (await b.page("/", limit="2", offset="2")).text)
    last = re.findall(r'data-job="([^"]+)"', (await b.page("/", limit="2", offset="4")).text)
    assert first + second + last == ["job-4", "job-3", "job-2", "job-1", "job-0"]


async def test_job_page_shows_payload_result_error_traceback_history(
    store: Backend, browse: Callable[[str | None], Browser]
) -> None:
    q = Queue("ui-work", backend=store)
    ok = await q.add("ui_echo", {"say": "hello"})
    bad = await q.add("ui_boom", {"why": "the sheet is empty"})
    await drain(store, ok, bad)
    b = browse("admin-token")
    page = (await b.page("/job", queue="ui-work", id=ok.id)).text
    assert '<pre class="json" id="payload">{\n  &#34;say&#34;: &#34;hello&#34;\n}</pre>' in page
    assert '<pre class="json" id="result">{\n  &#34;echo&#34;: &#34;hello&#34;\n}</pre>' in page
    assert "data-events" not in page  # finished: nothing to follow
    page = (await b.page("/job", queue="ui-work", id=bad.id)).text
    assert re.search(r'id="error">[^<]*ValueError: the sheet is empty', page)
    assert re.search(r'id="traceback">Traceback \(most recent call last\)', page)
    assert re.findall(r'<td><span class="state state-(\w+)">', page) == ["failed", "active", "waiting"]
    waiting = await q.add("ui_echo", {"say": "later"})
    page = (await b.page("/job", queue="ui-work", id=waiting.id)).text
    assert f'data-events="/events/{waiting.id}"' in page
    missing = await b.page("/job", queue="ui-work", id="nope")
    assert missing.status_code == 404 and "There is no job <code>nope</code>" in missing.text


async def test_user_text_is_escaped_everywhere(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    q = Queue("ui-work", backend=store)
    job = await q.add(XSS, {"x": XSS}, job_id=XSS)
    await q.cancel(job.id)
    b = browse("admin-token")
    for page in [await b.page("/"), await b.page("/job", queue="ui-work", id=XSS), await b.page("/", id=XSS)]:
        assert page.status_code == 200
        assert "<script>window" not in page.text and "<img src=x" not in page.text
        assert str(escape(XSS)) in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_sparkline_points() -> None:
    assert points([0, 2, 1], width=10, height=12) == "0.0,11.0 5.0,1.0 10.0,6.0"
    assert points([0, 0], width=10, height=12) == "0.0,11.0 10.0,11.0"
    assert points([]) == ""



async def test_an_owner_token_reads_only_its_owners_jobs(
    store: Backend, browse: Callable[[str | None], Browser]
) -> None:
    q = Queue("ui-a", backend=store)
    mine = await q.add("ui_echo", {"say": "a"}, job_id="alice-1", owner="alice", tags={"doc": "d-1"})
    theirs = await q.add("ui_echo", {"say": "b"}, job_id="bob-1", owner="bob", tags={"doc": "d-1"})
    await Queue("ui-b", backend=store).add("ui_echo", {"say": "c"}, job_id="alice-1", owner="bob")
    alice = browse("alice-token")

    def listed(text: str) -> list[str]:
        return re.findall(r'data-job="([^"]+)"', text)

    assert listed((await alice.page("/")).text) == ["alice-1"]
    assert listed((await alice.page("/", id="alice-1")).text) == ["alice-1"]  # not ui-b's, which is bob's
    assert listed((await alice.page("/", tag="doc=d-1")).text) == ["alice-1"]
    assert listed((await alice.page("/", owner="bob")).text) == ["alice-1"]  # an owner token reads its own only
    page = await alice.page("/job", queue="ui-a", id=mine.id)
    assert page.status_code == 200 and "<dt>owner</dt><dd>alice</dd>" in page.text
    assert (await alice.page("/job", queue="ui-a", id=theirs.id)).status_code == 404
    assert 'name="owner"' not in (await alice.page("/")).text


async def test_admins_search_by_owner_and_tag(store: Backend, browse: Callable[[str | None], Browser]) -> None:
    q = Queue("ui-a", backend=store)
    await q.add("ui_echo", {"say": "a"}, job_id="a-1", owner="alice", tags={"doc": "d-1", "team": "x"})
    await q.add("ui_echo", {"say": "b"}, job_id="b-1", owner="bob", tags={"doc": "d-2"})
    await q.add("ui_echo", {"say": "c"}, job_id="none-1")
    admin = browse("admin-token")

    def listed(text: str) -> list[str]:
        return re.findall(r'data-job="([^"]+)"', text)

    assert listed((await admin.page("/")).text) == ["none-1", "b-1", "a-1"]
    assert listed((await admin.page("/", owner="bob")).text) == ["b-1"]
    assert listed((await admin.page("/", tag="doc=d-1")).text) == ["a-1"]
    assert listed((await admin.page("/", tag="doc=d-1", owner="bob")).text) == []
    assert listed((await admin.page("/", id="a-1", tag="team=x")).text) == ["a-1"]
    assert listed((await admin.page("/", id="a-1", owner="bob")).text) == []
    page = (await admin.page("/")).text
    assert '<a class="tag" href="/?tag=doc%3Dd-1">doc=d-1</a>' in page and "<td>alice</td>" in page
    bad = await admin.page("/", tag="no-equals-sign")
    assert bad.status_code == 400 and "a tag filter is &#39;key=value&#39;" in bad.text
