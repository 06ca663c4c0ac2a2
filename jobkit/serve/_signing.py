"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under a `whsec_` base64 secret."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets

from ..errors import ConfigError

__all__ = ["SECRET_ENV", "headers", "load_secret", "new_secret", "sign"]

SECRET_ENV = "JOBKIT_WEBHOOK_SECRET"
PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret of 32 random bytes, as `whsec_<base64>`."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def load_secret(secret: str | None = None) -> bytes:
    """The key of `secret` (default: $JOBKIT_WEBHOOK_SECRET); ConfigError saying how to make one when unusable."""
    text = secret if secret is not None else os.environ.get(SECRET_ENV, "")
    hint = f"set {SECRET_ENV}=whsec_... (make one with `jobkit webhooks secret`)"
    if not text:
        raise ConfigError(f"webhooks are signed, and no secret is configured: {hint}")
    try:
        key = base64.b64decode(text.removeprefix(PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"the webhook secret is not base64 after its whsec_ prefix: {hint}") from None
    if len(key) < 16:
        raise ConfigError(f"the webhook secret is {len(key)} bytes; use at least 16: {hint}")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header value."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one signed POST."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body), "content-type": "application/json"}
