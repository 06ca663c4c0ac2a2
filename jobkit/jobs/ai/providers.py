"""Providers a payload may name: base URL, key and limits come from the worker's code or environment, never the payload.

`configure_provider(name, base_url=..., api_key_env=...)` in the worker's code; without it, the provider named
"default" comes from the environment: JOBKIT_AI_BASE_URL (else OPENAI_BASE_URL, else OpenAI's), OPENAI_API_KEY,
JOBKIT_AI_REQUESTS_PER_MINUTE (default 50) and JOBKIT_AI_TOKENS_PER_MINUTE. A payload that could carry a URL or a
key could send the worker's key, or its prompts, anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ...errors import ConfigError
from .._registry import shorten
from .errors import AISetupError

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_REQUESTS_PER_MINUTE", "Provider", "configure_provider", "get_provider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_REQUESTS_PER_MINUTE = 50


@dataclass(frozen=True)
class Provider:
    """An OpenAI-compatible endpoint (OpenAI, Azure OpenAI, vLLM, Ollama, LiteLLM's proxy...) and its limits."""

    name: str
    base_url: str
    api_key_env: str | None = "OPENAI_API_KEY"
    api_key: str | None = field(default=None, repr=False)
    auth: Literal["bearer", "api-key", "none"] = "bearer"
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE
    tokens_per_minute: int | None = None
    models: frozenset[str] | None = None
    price_provider: str | None = None

    def key(self) -> str | None:
        """The API key, read when a call is made (from the environment variable, unless given in code)."""
        if self.api_key is not None:
            return self.api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def auth_headers(self) -> dict[str, str]:
        key = self.key()
        out = dict(self.headers)
        if key and self.auth == "bearer":
            out["Authorization"] = f"Bearer {key}"
        elif key and self.auth == "api-key":
            out["api-key"] = key
        return out

    def check_model(self, model: str) -> None:
        if self.models is not None and model not in self.models:
            raise AISetupError(f"model {shorten(model)!r} is not allowed for provider {self.name!r} (allowed:"
                               f" {', '.join(sorted(self.models))}); add it to configure_provider(..., models=[...])")


_providers: dict[str, Provider] = {}


def configure_provider(
    name: str = "default", *, base_url: str, api_key_env: str | None = "OPENAI_API_KEY", api_key: str | None = None,
    auth: Literal["bearer", "api-key", "none"] = "bearer", headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None, requests_per_minute: int = DEFAULT_REQUESTS_PER_MINUTE,
    tokens_per_minute: int | None = None, models: Collection[str] | None = None, price_provider: str | None = None,
) -> Provider:
    """Make `provider=name` in a payload call `base_url` (…/v1) with this key and these limits, shared by every
    worker on the backend. Azure: `auth="api-key"`, `query={"api-version": "..."}`, the deployment in `base_url`.
    `models` limits which models a payload may name; `price_provider` is genai-prices' provider id, for prices."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"base_url {base_url!r} is not an http(s) URL: e.g. https://api.openai.com/v1 or"
                          " http://127.0.0.1:11434/v1")
    if requests_per_minute < 1 or (tokens_per_minute is not None and tokens_per_minute < 1):
        raise ConfigError("requests_per_minute and tokens_per_minute are whole numbers of 1 or more")
    provider = Provider(name, base_url.rstrip("/"), api_key_env, api_key, auth, dict(headers or {}), dict(query or {}),
                        requests_per_minute, tokens_per_minute, None if models is None else frozenset(models),
                        price_provider)
    _providers[name] = provider
    return provider


def forget_providers() -> None:
    """Back to the environment's default provider only (tests, re-run notebook cells)."""
    _providers.clear()


def _from_env() -> Provider:
    base = os.environ.get("JOBKIT_AI_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    try:
        rpm = int(os.environ.get("JOBKIT_AI_REQUESTS_PER_MINUTE") or DEFAULT_REQUESTS_PER_MINUTE)
        tpm_text = os.environ.get("JOBKIT_AI_TOKENS_PER_MINUTE")
        tpm = int(tpm_text) if tpm_text else None
    except ValueError:
        raise AISetupError("JOBKIT_AI_REQUESTS_PER_MINUTE and JOBKIT_AI_TOKENS_PER_MINUTE must be whole numbers"
                           ) from None
    return Provider("default", base.rstrip("/"), requests_per_minute=rpm, tokens_per_minute=tpm)


def get_provider(name: str) -> Provider:
    """The provider a payload names; the default one comes from the environment unless configured."""
    found = _providers.get(name)
    if found is not None:
        return found
    if name == "default":
        return _from_env()
    known = ", ".join(sorted({*_providers, "default"}))
    raise AISetupError(f"provider {shorten(name)!r} is not configured (known: {known}). A payload names a provider the"
                       " worker configured: call jobkit.jobs.ai.configure_provider(name, base_url=...) in a module the"
                       " worker imports")
