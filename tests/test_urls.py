"""A URL's password never reaches a message: not for unknown schemes, malformed URLs, or any error that quotes one."""

from __future__ import annotations

import pytest

from jobkit.backends import from_url
from jobkit.backends.redis import RedisBackend
from jobkit.config import mask_url
from jobkit.errors import ConfigError

SECRET = "s3cret"


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://app:s3cret@host:6379/0", "redis://app:***@host:6379/0"),
    ("reddis://app:s3cret@host:6379/0", "reddis://app:***@host:6379/0"),
    ("redis://:s3cret@host/0", "redis://:***@host/0"),
    ("redis://app:s3c@ret@host/0", "redis://app:***@host/0"),  # an unencoded @ in the password
    ("redis://app:s3/cret@host/0", "redis://app:***@host/0"),  # an unencoded / ...
    ("redis://app:s3?cret@host/0", "redis://app:***@host/0"),  # ... and ?
    ("redis:/app:s3cret@host/0", "redis:***@host/0"),  # one slash: not a URL with a user part, masked anyway
    ("app:s3cret@host:6379", "app:***@host:6379"),  # no scheme
    ("app:s3cret@redis://host", "app:***@redis://host"),
    ("redis://app:s3cret@[::1/0", "redis://app:***@[::1/0"),  # an unclosed IPv6 bracket
    ("redis+cluster://app:s3cret@h1:7000,h2:7001", "redis+cluster://app:***@h1:7000,h2:7001"),
    ("rediss://h:6380/0?ssl_password=s3cret&socket_timeout=2", "rediss://h:6380/0?ssl_password=***&socket_timeout=2"),
    ("redis://h/0?password=s3cret", "redis://h/0?password=***"),
    ("postgres://h/db?auth_token=s3cret&table=t", "postgres://h/db?auth_token=***&table=t"),
    ("redis://app@host/0", "redis://app@host/0"),  # a user without a password stays readable
    ("sqlite:///.jobkit/jobs.db", "sqlite:///.jobkit/jobs.db"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.parametrize("url", [
    "reddis://app:s3cret@localhost:6379/0",  # unknown scheme
    "redis:/app:s3cret@localhost:6379/0",  # malformed: no //
    "app:s3cret@localhost:6379",  # no scheme at all
    "sqlite://app:s3cret@host/jobs.db",  # not sqlite:///path
    "redis://app:s3cret@[::1:6379/0",  # unparsable host
    "redis://app:s3cret@localhost:port/0",  # a port that is not a number
    "redis://app:s3cret@localhost:6379/notadb",
    "redis://app:s3cret@localhost:6379/0?no_such_option=1",
    "redis+cluster://app:s3cret@h:7000,h:port",
    "redis+cluster://app:s3cret@h:7000/3",
])
def test_config_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_url(url)
    message = str(info.value)
    assert SECRET not in message and "***" in message, message


def test_rediss_cluster_urls_are_accepted() -> None:
    backend = from_url("rediss+cluster://app:s3cret@127.0.0.1:7000,127.0.0.1:7001?ssl_cert_reqs=required")
    assert isinstance(backend, RedisBackend)
    assert backend._seeds == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert backend._kwargs["connection_class"].__name__ == "SSLConnection"
    assert backend._kwargs["ssl_cert_reqs"] == "required" and SECRET not in repr(backend)
