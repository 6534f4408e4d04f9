"""Store URLs: which kind a URL names, and its password masked for everything promptlearn shows or writes.

The password of a URL is masked in everything promptlearn shows or writes (`mask_url`, `mask_secret`); give it
through PGPASSWORD or ~/.pgpass to keep it off the command line altogether.
"""

from __future__ import annotations

import re
from pathlib import Path

DB_SCHEMES = ("postgresql://", "postgres://")
_USERINFO = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@]*)@", re.I)


def is_db_url(url: str | Path | None) -> bool:
    return isinstance(url, str) and url.lower().startswith(DB_SCHEMES)


def url_password(url: str) -> str | None:
    """The password written in a URL (user:PASSWORD@host), percent-decoded, or None."""
    from urllib.parse import unquote

    m = _USERINFO.match(url)
    return unquote(m.group("pw")) if m and m.group("pw") else None


def mask_url(url: str | Path) -> str:
    """The URL with its password replaced by ***, so it can be printed, stored and reported."""
    text = str(url)
    m = _USERINFO.match(text)
    if not m or not m.group("pw"):
        return text
    return f"{m.group('scheme')}{m.group('user')}:***@{text[m.end():]}"


def mask_secret(text: str, url: str | Path | None) -> str:
    """`text` (an error from the driver, say) with the URL's password masked wherever it appears."""
    if not isinstance(url, str):
        return text
    pw = url_password(url)
    out = text.replace(url, mask_url(url))
    if pw:
        out = out.replace(pw, "***")
        m = _USERINFO.match(url)
        if m:
            out = out.replace(m.group("pw"), "***")  # as written, percent-encoded
    return out
