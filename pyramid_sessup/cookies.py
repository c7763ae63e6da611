"""Reading our own cookies from the raw ``Cookie`` header.

WebOb's ``request.cookies`` keeps the *last* of several cookies with one name
and fails on any cookie that is not UTF-8, whoever set it.  A second cookie
with the session's name is what a sibling subdomain (or a script on a
non-secure page) can plant to push its own session or CSRF nonce on a visitor,
so our cookies are read here: several values are used only when they are all
the same.
"""
from __future__ import annotations

from typing import Any, Mapping


def read_cookie(environ: Mapping[str, Any], name: str) -> tuple[str | None, bool]:
    """``(value, ambiguous)`` of cookie ``name`` in the request ``environ``.

    ``value`` is ``None`` when the cookie is absent, or when several cookies
    of that name disagree (then ``ambiguous`` is true).  Values are returned
    as sent, without the double quotes RFC 6265 allows around them (our
    values never need escapes); names compare exactly.
    """
    header = environ.get("HTTP_COOKIE")
    if not header or name not in header:
        return None, False
    found: str | None = None
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or key.strip() != name:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]  # RFC 6265 allows a quoted value
        if found is None:
            found = value
        elif value != found:
            return None, True
    return found, False
