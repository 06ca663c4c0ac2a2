"""Why an email job stopped for good: a `jobkit.Unrecoverable`, so the job fails at once, not retried.

    Unrecoverable
    └── EmailSetupError  the payload names a server, template or attachment that cannot work or is not allowed
"""

from __future__ import annotations

from ... import Unrecoverable

__all__ = ["EmailSetupError"]


class EmailSetupError(Unrecoverable):
    """The server, templates, addresses or attachments in the payload cannot work or are not allowed; nothing sent."""
