"""send_email against a real SMTP server on loopback (aiosmtpd): STARTTLS with a certificate made for the test, AUTH,
4xx and 5xx replies, templates, attachments and the shared rate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
import jobkit.jobs
from jobkit.jobs import register_email_templates, register_smtp_server
from jobkit.jobs._quota import SharedRate
from jobkit.jobs.mail.compose import message_id
from jobkit.jobs.mail.sender import LIMITS_QUEUE
from jobkit.jobs.mail.testing import MailCatcher

from .mail_helpers import run_email, server_tls

pytest.importorskip("aiosmtpd")
SENDER = "reports@example.com"


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MailCatcher]:
    """A STARTTLS server requiring AUTH, registered as "default" (its password from the environment)."""
    tls, certs = server_tls(tmp_path)
    monkeypatch.setenv("JOBKIT_TEST_SMTP_PASSWORD", "s3cret")
    with MailCatcher(tls=tls, users={"app": "s3cret"}) as catcher:
        register_smtp_server("default", host="127.0.0.1", port=catcher.port, security="starttls", username="app",
                             password_env="JOBKIT_TEST_SMTP_PASSWORD", sender=SENDER,
                             tls_context=certs.client_context())
        yield catcher


def people(n: int) -> list[dict[str, object]]:
    return [{"to": f"user{i}@example.com", "name": f"User {i}", "context": {"n": i}} for i in range(n)]


async def test_sends_each_recipient_its_message_over_starttls_and_auth(any_backend: jobkit.Backend,
                                                                      smtp: MailCatcher) -> None:
    job = await run_email(any_backend, {"recipients": people(3), "subject": "Report {{ n }} for {{ team }}",
                                        "text": "Hello {{ recipient.name }}, your number is {{ n }}.",
                                        "context": {"team": "ops"}})
    assert job.state is jobkit.JobState.COMPLETED, job.error
    report = jobkit.jobs.EmailReport.model_validate(job.result)
    assert (report.sent, report.failed, report.skipped, report.total) == (3, 0, 0, 3)
    got = {d.recipients[0]: d for d in smtp.delivered}
    assert sorted(got) == [f"user{i}@example.com" for i in range(3)]
    for i in range(3):
        d = got[f"user{i}@example.com"]
        assert d.user == "app" and d.sender == SENDER
        assert d.message["Subject"] == f"Report {i} for ops"
        assert d.message.get_content().strip() == f"Hello User {i}, your number is {i}."
        assert d.message["Message-ID"] == message_id(job.id, f"user{i}@example.com", SENDER)
        assert report.recipients[i].message_id == d.message["Message-ID"]
    assert job.progress is not None and job.progress.extra["sent"] == 3 and job.progress.extra["total"] == 3
    assert "rate_per_minute" in job.progress.extra


async def test_a_wrong_password_fails_the_job_at_once_naming_the_fix(any_backend: jobkit.Backend,
                                                                   smtp: MailCatcher,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBKIT_TEST_SMTP_PASSWORD", "wrong")
    job = await run_email(any_backend, {"recipients": people(1), "subject": "s", "text": "t"})
    assert job.state is jobkit.JobState.FAILED and job.attempts == 1
    assert "refused the login of 'app'" in (job.error or "") and "register_smtp_server" in (job.error or "")
    assert smtp.delivered == []


async def test_4xx_is_retried_per_recipient_and_5xx_is_failed_at_once(any_backend: jobkit.Backend,
                                                                     smtp: MailCatcher) -> None:
    smtp.reply("user0@example.com", "451 4.7.1 greylisted, try later")
    smtp.reply("user1@example.com", "550 5.1.1 no such mailbox", "250 would have been accepted")
    smtp.reply("user2@example.com", "452 4.2.2 mailbox full", "452 4.2.2 mailbox full")
    job = await run_email(any_backend, {"recipients": people(4), "subject": "s", "text": "t", "retries": 1,
                                        "retry_delay": 0.01})
    assert job.state is jobkit.JobState.COMPLETED, job.error
    report = jobkit.jobs.EmailReport.model_validate(job.result)
    rows = {r.to: r for r in report.recipients}
    assert rows["user0@example.com"].status == "sent"
    assert (rows["user1@example.com"].status, rows["user1@example.com"].code) == ("failed", 550)
    assert "no such mailbox" in (rows["user1@example.com"].error or "")
    assert (rows["user2@example.com"].status, rows["user2@example.com"].code) == ("failed", 452)
    assert rows["user3@example.com"].status == "sent"
    assert (report.sent, report.failed) == (2, 2)
    assert smtp.to(["user0@example.com", "user1@example.com", "user3@example.com"]) == {
        "user0@example.com": 1, "user1@example.com": 0, "user3@example.com": 1}
    assert smtp.handler.replies["user1@example.com"] == ["250 would have been accepted"], "a 5xx was tried again"


async def test_html_is_autoescaped_text_is_not_and_the_sandbox_holds(any_backend: jobkit.Backend,
                                                                      smtp: MailCatcher) -> None:
    evil = "<script>alert(1)</script>"
    job = await run_email(any_backend, {
        "recipients": [{"to": "a@example.com", "context": {"who": evil}},
                       {"to": "b@example.com", "context": {"who": "{{ 7 * 7 }}"}}],
        "subject": "Hi {{ who }}", "text": "Dear {{ who }}", "html": "<p>Dear {{ who }}</p>"})
    assert job.state is jobkit.JobState.COMPLETED, job.error
    a = next(d for d in smtp.delivered if d.recipients == ["a@example.com"]).message
    assert a.get_body(("html",)).get_content().strip() == "<p>Dear &lt;script&gt;alert(1)&lt;/script&gt;</p>"
    assert a.get_body(("plain",)).get_content().strip() == f"Dear {evil}"
    b = next(d for d in smtp.delivered if d.recipients == ["b@example.com"]).message
    assert b["Subject"] == "Hi {{ 7 * 7 }}", "a variable's value is never rendered as a template"

    sandboxed = await run_email(any_backend, {"recipients": [{"to": "c@example.com"}], "subject": "x",
                                              "text": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})
    report = jobkit.jobs.EmailReport.model_validate(sandboxed.result)
    assert report.recipients[0].status == "failed" and "unsafe" in (report.recipients[0].error or "")
    assert not any(d.recipients == ["c@example.com"] for d in smtp.delivered)


async def test_named_templates_from_the_registered_folder_only(any_backend: jobkit.Backend, smtp: MailCatcher,
                                                              tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "welcome.subject.txt").write_text("Welcome, {{ recipient.name }}\n")
    (folder / "welcome.html").write_text("<h1>Hi {{ recipient.name }}</h1>")
    (tmp_path / "secret.subject.txt").write_text("outside")
    register_email_templates(folder)
    try:
        job = await run_email(any_backend, {"recipients": [{"to": "a@example.com", "name": "<Ann>"}],
                                            "template": "welcome"})
        assert job.state is jobkit.JobState.COMPLETED, job.error
        msg = smtp.delivered[0].message
        assert msg["Subject"] == "Welcome, <Ann>"
        assert msg.get_body(("html",)).get_content().strip() == "<h1>Hi &lt;Ann&gt;</h1>"
        escape = await run_email(any_backend, {"recipients": [{"to": "a@example.com"}], "template": "../secret"})
        assert escape.state is jobkit.JobState.FAILED and escape.attempts == 1
        assert "needs ../secret.subject.txt" in (escape.error or "")
    finally:
        register_email_templates(None)
    assert len(smtp.delivered) == 1


async def test_attachments_inside_the_roots_only(any_backend: jobkit.Backend, smtp: MailCatcher,
                                                 file_roots: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (file_roots / "report.csv").write_bytes(b"a,b\n1,2\n")
    job = await run_email(any_backend, {"recipients": people(1), "subject": "s", "text": "t",
                                        "attachments": [{"path": "report.csv", "filename": "March.csv"}]})
    assert job.state is jobkit.JobState.COMPLETED, job.error
    (part,) = list(smtp.delivered[0].message.iter_attachments())
    assert part.get_filename() == "March.csv" and part.get_content_type() == "text/csv"
    assert part.get_content() == "a,b\n1,2\n"

    outside = tmp_path_factory.mktemp("elsewhere") / "secret.txt"
    outside.write_text("do not send")
    for path in (str(outside), "../" + outside.name, "/etc/passwd"):
        refused = await run_email(any_backend, {"recipients": people(1), "subject": "s", "text": "t",
                                                "attachments": [{"path": path}]})
        assert refused.state is jobkit.JobState.FAILED and refused.attempts == 1
        assert "outside the file roots" in (refused.error or "")
    assert len(smtp.delivered) == 1


async def test_bad_payloads_are_refused_before_anything_is_queued(any_backend: jobkit.Backend) -> None:
    bad = [
        {"recipients": [{"to": "a@example.com\r\nBcc: x@evil.com"}], "subject": "s", "text": "t"},
        {"recipients": [{"to": "not-an-address"}], "subject": "s", "text": "t"},
        {"recipients": [], "subject": "s", "text": "t"},
        {"recipients": [{"to": "a@example.com"}], "subject": "s"},
        {"recipients": [{"to": "a@example.com"}], "template": "w", "subject": "s", "text": "t"},
        {"recipients": [{"to": "a@example.com"}], "subject": "s", "text": "t", "password": "x"},
    ]
    for payload in bad:
        with pytest.raises(jobkit.PayloadError, match="nothing was queued"):
            await jobkit.submit(jobkit.jobs.send_email, payload, backend=any_backend)
    assert (await jobkit.Queue("default", backend=any_backend).counts()).total == 0


async def test_unregistered_server_and_duplicates(any_backend: jobkit.Backend, smtp: MailCatcher) -> None:
    job = await run_email(any_backend, {"recipients": people(1), "subject": "s", "text": "t", "server": "other"})
    assert job.state is jobkit.JobState.FAILED and "SMTP server 'other' is not registered" in (job.error or "")
    twice = await run_email(any_backend, {"recipients": [{"to": "a@example.com"}, {"to": "A@example.com"}],
                                          "subject": "s", "text": "t"})
    report = jobkit.jobs.EmailReport.model_validate(twice.result)
    assert [r.status for r in report.recipients] == ["sent", "skipped"]
    assert report.recipients[1].error == "the same address as recipient 0"
    assert len(smtp.delivered) == 1


async def test_the_rate_is_shared_through_the_backend(any_backend: jobkit.Backend, smtp: MailCatcher) -> None:
    register_smtp_server("slow", host="127.0.0.1", port=smtp.port, username="app", password="s3cret",
                         sender=SENDER, per_minute=1, tls_context=smtp_client_context(smtp))
    job = await run_email(any_backend, {"recipients": people(1), "subject": "s", "text": "t", "server": "slow"})
    assert job.state is jobkit.JobState.COMPLETED, job.error
    other_worker = SharedRate(any_backend, LIMITS_QUEUE, "smtp:slow", 1)
    assert await any_backend.take(LIMITS_QUEUE, other_worker.asks(0), time.time()) > 50, \
        "the message sent did not count against the limit every worker shares"


def smtp_client_context(smtp: MailCatcher) -> object:
    from jobkit.jobs.mail.servers import get_server

    return get_server("default").tls_context


async def test_tls_from_the_start(any_backend: jobkit.Backend, tmp_path: Path) -> None:
    tls, certs = server_tls(tmp_path)
    with MailCatcher(tls=tls, implicit_tls=True, users={"app": "pw"}) as smtp:
        register_smtp_server("implicit", host="127.0.0.1", port=smtp.port, security="tls", username="app",
                             password="pw", sender=SENDER, tls_context=certs.client_context())
        job = await run_email(any_backend, {"recipients": people(2), "subject": "s", "text": "t",
                                            "server": "implicit"})
        assert job.state is jobkit.JobState.COMPLETED, job.error
        assert [d.user for d in smtp.delivered] == ["app", "app"]
        register_smtp_server("untrusted", host="127.0.0.1", port=smtp.port, security="tls", username="app",
                             password="pw", sender=SENDER)  # the system's CAs: the test CA is not among them
        refused = await run_email(any_backend, {"recipients": people(1), "subject": "s", "text": "t",
                                                "server": "untrusted", "retries": 0})
        assert refused.state is jobkit.JobState.FAILED and refused.attempts == 1
        assert "is not trusted" in (refused.error or "") and "tls_context=" in (refused.error or "")
        assert len(smtp.delivered) == 2
