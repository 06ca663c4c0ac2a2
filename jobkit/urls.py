"""Backend and destination URLs as messages and logs may show them: any password replaced by ***.

Masking works on the text, not on a parsed URL, so it also covers URLs too malformed to parse (an unknown
scheme, a missing `//`, an unencoded `@`, `/` or `?` in the password, a broken IPv6 host).
"""

from __future__ import annotations

import re

__all__ = ["mask_url"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARAM = re.compile(r"([?&;](?:[^=&;#]*?(?:password|passwd|pwd|secret|token)[^=&;#]*)=)[^&;#]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """`url` with the password of its user part, and query values such as `password=`, replaced by ***."""
    if not isinstance(url, str):
        return repr(url)
    m = _SCHEME.match(url)
    scheme = m.group(0) if m else ""
    rest = url[len(scheme):]
    userinfo, at, host = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:***@{host}" if colon else f"{userinfo}@{host}"
    return _SECRET_PARAM.sub(r"\1***", scheme + rest)
