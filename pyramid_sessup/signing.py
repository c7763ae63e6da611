"""Signed session-ID cookies with secret rotation.

The cookie value is ``<id>.<signature>``: a 43-character URL-safe ID and the
HMAC-SHA256 of it, base64url without padding.  The first secret signs; every
secret verifies, so secrets rotate without logging anyone out, and a cookie
signed with an older secret is re-issued with the first one.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Sequence

# Checked before any HMAC work, so oversized or odd cookies cost nothing.
_COOKIE_RE = re.compile(r"([A-Za-z0-9_-]{43})\.([A-Za-z0-9_-]{43})\Z")
_COOKIE_LEN = 87


def new_session_id() -> str:
    """A fresh session ID: 256 bits from the OS CSPRNG."""
    return secrets.token_urlsafe(32)


class Signer:
    """Signs with ``secrets[0]``, verifies with any of ``secrets``."""

    def __init__(self, secret_list: Sequence[str]) -> None:
        if not secret_list:
            raise ValueError("at least one secret is required")
        # Derived keys: a secret used elsewhere in the app cannot forge our cookies.
        self._keys = [
            hashlib.sha256(b"pyramid_sessup.session-id\x00" + s.encode("utf-8")).digest() for s in secret_list
        ]

    def _signature(self, key: bytes, sid: str) -> str:
        digest = hmac.digest(key, sid.encode("ascii"), "sha256")  # the one-shot C path
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def sign(self, sid: str) -> str:
        """The cookie value for ``sid``."""
        return f"{sid}.{self._signature(self._keys[0], sid)}"

    def unsign(self, value: str | None) -> tuple[str, bool] | None:
        """``(sid, signed_with_current_secret)`` for a valid cookie value, else ``None``."""
        if not value or len(value) != _COOKIE_LEN:
            return None
        match = _COOKIE_RE.match(value)
        if match is None:
            return None
        sid, signature = match.groups()
        for index, key in enumerate(self._keys):
            if hmac.compare_digest(self._signature(key, sid), signature):
                return sid, index == 0
        return None
