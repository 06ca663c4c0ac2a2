"""Why an AI job stopped for good: each a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    ├── AISetupError     the payload names a provider, model, price, template, source or sink that cannot work
    ├── ProviderRefused  the provider refused the key or the account (401, 403, quota exhausted): no item can pass
    └── ItemsFailed      the error policy stopped the batch (on_error="fail", or over max_errors)
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["AISetupError", "ItemsFailed", "ProviderRefused"]


class AISetupError(Unrecoverable):
    """Something the payload names cannot work; the message says what and how to fix it."""


class ProviderRefused(Unrecoverable):
    """The provider refused the credentials or the account: every item would fail the same way."""


class ItemsFailed(Unrecoverable):
    """Failed items stopped the batch under its error policy; results already in the sink stay there."""
