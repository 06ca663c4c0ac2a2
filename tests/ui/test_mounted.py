"""The dashboard as `jobkit.serve.app()` mounts it at /ui: the API's tokens log in, and a job page follows the
API's own event stream (/jobs/{id}/events), which takes the dashboard's cookie."""

from __future__ import annotations

import json
import re

from jobkit import Queue
from tests.serve.conftest import TOKENS, Served, served  # noqa: F401 - the fixture, shared with the API's tests


async def test_the_api_tokens_log_in_and_pages_link_the_api_event_stream(served: Served) -> None:  # noqa: F811
    client = served.client
    r = await client.get("/ui/")
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=%2Fui%2F"
    r = await client.post("/ui/login?next=/ui/", data={"token": "not-a-token"})
    assert r.status_code == 401
    r = await client.post("/ui/login?next=/ui/", data={"token": TOKENS["admin"]})
    assert r.status_code == 303 and r.headers["location"] == "/ui/"
    q = Queue("ui-mounted", backend=served.backend)
    job = await q.add("anything", {"n": 1}, job_id="j-1")
    home = (await client.get("/ui/")).text
    assert 'data-queue="ui-mounted"' in home and '<a href="/ui/job?queue=ui-mounted&amp;id=j-1">' in home
    page = (await client.get("/ui/job", params={"queue": q.name, "id": job.id})).text
    events = re.search(r'data-events="([^"]+)"', page)
    assert events is not None and events.group(1) == "/jobs/j-1/events?queue=ui-mounted"
    await q.cancel(job.id)  # a finished job's stream is its snapshot, then the end
    stream = await client.get(events.group(1).replace("&amp;", "&"))  # the cookie, no Authorization header
    assert stream.status_code == 200
    snapshot = re.search(r"event: snapshot\r?\ndata: (.+)", stream.text)
    assert snapshot is not None and json.loads(snapshot.group(1))["state"] == "cancelled"


async def test_read_only_tokens_of_the_api_get_no_actions(served: Served) -> None:  # noqa: F811
    client = served.client
    await client.post("/ui/login", data={"token": TOKENS["alice"]})
    home = await client.get("/ui/")
    assert home.status_code == 200 and "read-only · alice" in home.text and "data-action" not in home.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', home.text)
    assert csrf is not None
    await Queue("ui-mounted", backend=served.backend).add("anything", {})
    r = await client.post("/ui/queue/pause", data={"queue": "ui-mounted", "csrf": csrf.group(1)})
    assert r.status_code == 403 and not (await Queue("ui-mounted", backend=served.backend).counts()).paused


async def test_an_owner_follows_its_own_job_and_not_anothers(served: Served) -> None:  # noqa: F811
    client = served.client
    q = Queue("ui-mounted", backend=served.backend)
    mine = await q.add("anything", {}, job_id="mine", owner="alice")
    await q.add("anything", {}, job_id="theirs", owner="bob")
    await client.post("/ui/login", data={"token": TOKENS["alice"]})
    assert re.findall(r'data-job="([^"]+)"', (await client.get("/ui/")).text) == ["mine"]
    assert (await client.get("/ui/job", params={"queue": q.name, "id": "theirs"})).status_code == 404
    page = (await client.get("/ui/job", params={"queue": q.name, "id": mine.id})).text
    events = re.search(r'data-events="([^"]+)"', page)
    assert events is not None
    await q.cancel(mine.id)
    stream = await client.get(events.group(1).replace("&amp;", "&"))
    assert stream.status_code == 200 and '"state": "cancelled"' in stream.text
    assert (await client.get("/jobs/theirs/events", params={"queue": q.name})).status_code == 404
