"""The SSRF guard: private, loopback, link-local and metadata targets are refused unless allow-listed; every resolved
address is checked, and the POST goes to the address checked."""

from __future__ import annotations

import pytest

from jobkit.errors import ConfigError
from jobkit.models import JobOptions
from jobkit.serve._signing import load_secret, new_secret
from jobkit.serve._targets import Refused, TargetGuard


@pytest.mark.parametrize(("url", "why"), [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.9.9.9:8080/hook", "loopback"),
    ("http://localhost/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("https://192.168.0.10/hook", "private"),
    ("http://172.16.5.5/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://100.64.0.1/", "not a public address"),
])
async def test_non_public_targets_are_refused(url: str, why: str) -> None:
    with pytest.raises(Refused, match=why):
        await TargetGuard([]).check(url)


async def test_allow_list_by_address_network_or_name() -> None:
    target = await TargetGuard(["127.0.0.1"]).check("http://127.0.0.1:8080/hook?x=1")
    assert (target.url, target.host, target.port) == ("http://127.0.0.1:8080/hook?x=1", "127.0.0.1", 8080)
    assert (await TargetGuard(["10.0.0.0/8"]).check("http://10.1.2.3/h")).url == "http://10.1.2.3/h"
    pinned = await TargetGuard(["localhost"]).check("http://localhost:9/h")
    assert pinned.host == "localhost" and pinned.url in ("http://127.0.0.1:9/h", "http://[::1]:9/h")
    with pytest.raises(Refused):
        await TargetGuard(["10.0.0.0/8"]).check("http://192.168.1.1/h")


async def test_public_addresses_pass_and_the_env_gives_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await TargetGuard([]).check("https://93.184.215.14/h")).url == "https://93.184.215.14/h"
    monkeypatch.setenv("JOBKIT_WEBHOOK_ALLOW", "127.0.0.1, 10.0.0.0/8")
    assert (await TargetGuard().check("http://10.0.0.7/h")).host == "10.0.0.7"


async def test_a_name_that_does_not_resolve_is_an_oserror_to_retry() -> None:
    with pytest.raises(OSError):
        await TargetGuard([]).check("http://no-such-host.invalid/h")


def test_webhook_urls_are_checked_when_given() -> None:
    for bad in ("ftp://x/y", "hooks.example.com/x", "http:///x", 'http://x/"y'):
        with pytest.raises(ValueError, match="http:// or https://"):
            JobOptions(webhook=bad)


def test_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    made = new_secret()
    assert made.startswith("whsec_") and len(load_secret(made)) == 32
    monkeypatch.delenv("JOBKIT_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ConfigError, match="JOBKIT_WEBHOOK_SECRET"):
        load_secret()
    with pytest.raises(ConfigError, match="not base64"):
        load_secret("whsec_not*base64")
    monkeypatch.setenv("JOBKIT_WEBHOOK_SECRET", made)
    assert load_secret() == load_secret(made)
