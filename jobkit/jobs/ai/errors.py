"""Why an AI job stopped for good: each a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    ├── AISetupError     the payload names a provider, model, price, template, source or sink that cannot work
    ├── ProviderRefused  the provider refused the key or the account (401, 403, quota exhausted): no item can pass
    ├── ItemsFailed      the error policy stopped the batch (on_error="fail", or over max_errors)
    └── BatchRefused     mode="batch_api": the provider refused a batch file or request whole (a 4xx)
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["AISetupError", "BatchRefused", "ItemsFailed", "ProviderRefused"]


class AISetupError(Unrecoverable):
    """Something the payload names cannot work; the message says what and how to fix it."""


class ProviderRefused(Unrecoverable):
    """The provider refused the credentials or the account: every item would fail the same way."""


class ItemsFailed(Unrecoverable):
    """Failed items stopped the batch under its error policy; results already in the sink stay there."""


class BatchRefused(Unrecoverable):
    """The provider's Batch API refused a request whole (a 4xx other than 401/403/429): sending it again would not
    pass."""
