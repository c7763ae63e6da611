"""CSRF tokens that need no stored session.

A visitor gets a random nonce (256 bits) in a cookie of its own, named after
the session cookie (``sessup`` -> ``sessup_csrf``, ``__Host-sessup`` ->
``__Host-sessup_csrf``), always ``HttpOnly`` and otherwise with the session
cookie's ``Path``, ``Domain``, ``SameSite``, ``Secure`` rule and ``Max-Age``.
The token is the HMAC-SHA256 of that nonce under a key derived from
``sessup.session.secret``: the first secret signs, every secret verifies, so
secrets rotate without breaking open forms.  Hence:

* rendering a token writes nothing to the session store (at most it sets the
  nonce cookie), and checking one reads nothing from it;
* :func:`rotate` (called by ``regenerate()`` and ``invalidate()``, i.e. login
  and logout) draws a new nonce, so every token issued before is dead;
* the nonce also names the visitor where something must belong to a browser
  without a stored session (the owner of a resumable upload).

A second cookie with the nonce's name that disagrees with the first makes the
nonce absent (see :mod:`.cookies`): no token then verifies.  An attacker who
can write cookies for the site (a sibling subdomain) could still plant a nonce
whose token he knows; the ``__Host-`` cookie-name prefix prevents that.

Use :func:`check_csrf` in views, or install :class:`SessupCSRFStoragePolicy`
so Pyramid's ``require_csrf`` uses these tokens.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from pyramid.csrf import check_csrf_origin
from pyramid.exceptions import BadCSRFOrigin
from pyramid.interfaces import ICSRFStoragePolicy, IDefaultCSRFOptions
from pyramid.request import Request
from pyramid.response import Response
from zope.interface import implementer

from .cookies import read_cookie
from .exceptions import CSRFRefused

if TYPE_CHECKING:
    from .settings import SessupSettings

__all__ = ["CSRFConfig", "SessupCSRFStoragePolicy", "check_csrf", "check_origin", "check_token",
           "get_csrf_token", "new_csrf_token", "require_csrf", "rotate", "visitor_nonce"]

#: Header and form field of the token (Pyramid's defaults).
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

#: What a refused script client is told, so the 403 says how to succeed.
HOW_TO = (f"get a token from GET /csrf (keep its cookies) and send it in the {CSRF_HEADER} header "
          f"or a {CSRF_FIELD} form field before the files")

#: Appended to the session cookie's name to name the nonce cookie.
COOKIE_SUFFIX = "_csrf"
#: A nonce is 32 random bytes, base64url without padding; checked before any HMAC work.
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{43}\Z")
#: Longest supplied token worth comparing (ours are 43 characters).
_MAX_TOKEN = 128
_STATE = "_sessup_csrf"


@dataclass(frozen=True)
class CSRFConfig:
    """The nonce cookie and the token keys, from the ``sessup.session.*`` values."""

    session_cookie: str
    cookie_name: str
    keys: tuple[bytes, ...]
    max_age: int | None
    secure: str
    samesite: str
    path: str
    domain: str | None

    @classmethod
    def from_values(cls, values: SessupSettings) -> CSRFConfig:
        secret_list = values.session.secret
        if not secret_list:
            raise ValueError("at least one secret is required")
        return cls(
            session_cookie=values.session.name,
            cookie_name=values.session.name + COOKIE_SUFFIX,
            # Derived keys: distinct from the session-ID signing keys of the same secrets.
            keys=tuple(hashlib.sha256(b"pyramid_sessup.csrf-token\x00" + s.encode("utf-8")).digest()
                       for s in secret_list),
            max_age=values.session.cookie_max_age,
            secure=values.session.cookie_secure,
            samesite=values.session.cookie_samesite,
            path=values.session.cookie_path,
            domain=values.session.cookie_domain,
        )

    def _sign(self, key: bytes, nonce: str) -> str:
        digest = hmac.digest(key, nonce.encode("ascii"), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def token(self, nonce: str) -> str:
        """The token of ``nonce`` (signed with the first secret)."""
        return self._sign(self.keys[0], nonce)

    def verify(self, nonce: str, supplied: str) -> bool:
        """Whether ``supplied`` is the token of ``nonce`` under any secret; constant time."""
        if len(supplied) > _MAX_TOKEN:
            return False
        given = supplied.encode("utf-8", "backslashreplace")
        ok = False
        for key in self.keys:  # every key, no early exit
            ok |= hmac.compare_digest(self._sign(key, nonce).encode("ascii"), given)
        return ok

    def set_cookie_header(self, request: Request, value: str) -> str:
        """The ``Set-Cookie`` value that stores nonce ``value``."""
        header = f"{self.cookie_name}={value}; Path={self.path}"
        if self.max_age is not None:
            header += f"; Max-Age={self.max_age}; Expires={formatdate(int(time.time()) + self.max_age, usegmt=True)}"
        if self.domain:
            header += f"; Domain={self.domain}"
        header += f"; HttpOnly; SameSite={self.samesite.capitalize()}"
        if self.secure == "true" or (self.secure == "auto" and request.scheme == "https"):
            header += "; Secure"
        return header


def csrf_config(request: Request) -> CSRFConfig:
    """The application's :class:`CSRFConfig`, built once from its ``sessup.*`` values."""
    registry = request.registry
    config = getattr(registry, "sessup_csrf_config", None)
    if config is None:
        config = registry.sessup_csrf_config = CSRFConfig.from_values(registry.sessup_settings)
    return config


class _Visitor:
    """One request's view of the nonce cookie."""

    __slots__ = ("config", "nonce", "send", "sent", "issued")

    def __init__(self, config: CSRFConfig, nonce: str | None) -> None:
        self.config = config
        self.nonce = nonce
        self.send = False  # the nonce is new: its cookie must go out
        self.sent = False
        self.issued = False  # a token went into the answer

    def new_nonce(self) -> str:
        self.nonce = secrets.token_urlsafe(32)
        self.send = True
        return self.nonce


def _visitor(request: Request) -> _Visitor:
    state: _Visitor | None = request.__dict__.get(_STATE)
    if state is None:
        config = csrf_config(request)
        value, _ambiguous = read_cookie(request.environ, config.cookie_name)
        nonce = value if value is not None and _NONCE_RE.match(value) else None
        state = _Visitor(config, nonce)
        request.__dict__[_STATE] = state
        request.add_response_callback(_finish)
    return state


def _finish(request: Request, response: Response) -> None:
    state: _Visitor = request.__dict__[_STATE]
    if state.issued:
        # The body holds a per-visitor token: never from or into a shared cache.
        vary = response.headers.get("Vary")
        if not vary:
            response.headers["Vary"] = "Cookie"
        elif "cookie" not in vary.lower():
            response.headers["Vary"] = vary + ", Cookie"
        if "Cache-Control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
    if state.send and not state.sent and response.status_int < 500 and state.nonce is not None:
        _send(request, response, state)


def _send(request: Request, response: Response, state: _Visitor) -> None:
    response.headerlist.append(("Set-Cookie", state.config.set_cookie_header(request, state.nonce or "")))
    state.sent = True


def visitor_nonce(request: Request, create: bool = False) -> str | None:
    """This visitor's nonce; with ``create``, a new one (and its cookie) if there is none."""
    state = _visitor(request)
    if state.nonce is None and create:
        state.new_nonce()
    return state.nonce


def get_csrf_token(request: Request) -> str:
    """The visitor's CSRF token, creating the nonce (cookie only) if needed."""
    state = _visitor(request)
    nonce = state.nonce or state.new_nonce()
    state.issued = True
    return state.config.token(nonce)


def new_csrf_token(request: Request) -> str:
    """Rotate the nonce and return the new token; earlier tokens stop verifying."""
    state = _visitor(request)
    state.issued = True
    return state.config.token(state.new_nonce())


def rotate(request: Request) -> None:
    """Kill every token issued so far (login, logout); nothing happens for a
    visitor who never had a nonce, so no cookie is set for nothing."""
    state = _visitor(request)
    if state.nonce is not None:
        state.new_nonce()


def check_csrf(request: Request, supplied_token: Any) -> bool:
    """Whether ``supplied_token`` is this visitor's current token (constant-time).

    Never creates a nonce or touches the session store, so a refused request
    leaves nothing behind and sets no cookie.
    """
    if not isinstance(supplied_token, str) or not supplied_token:
        return False
    state = _visitor(request)
    if state.nonce is None:
        return False
    return state.config.verify(state.nonce, supplied_token)


def follow_session_cookie(request: Request, response: Response) -> None:
    """Re-send the nonce cookie beside a session cookie that carries a
    ``Max-Age`` (the session layer calls this), so the nonce lives as long as
    the session it protects."""
    config = csrf_config(request)
    if config.max_age is None:
        return
    prefix = config.session_cookie + "="
    if not any(name.lower() == "set-cookie" and value.startswith(prefix) and not value.startswith(prefix + ";")
               for name, value in response.headerlist):
        return
    state = _visitor(request)
    if state.nonce is not None and not state.sent:
        _send(request, response, state)


@implementer(ICSRFStoragePolicy)
class SessupCSRFStoragePolicy:
    """Pyramid's ``ICSRFStoragePolicy`` over these tokens.

    ``config.set_csrf_storage_policy(SessupCSRFStoragePolicy())`` makes
    Pyramid's ``require_csrf`` and ``pyramid.csrf.get_csrf_token`` use them.
    """

    def new_csrf_token(self, request: Request) -> str:
        return new_csrf_token(request)

    def get_csrf_token(self, request: Request) -> str:
        return get_csrf_token(request)

    def check_csrf_token(self, request: Request, supplied_token: str) -> bool:
        return check_csrf(request, supplied_token)


# -- the add-on's own views ---------------------------------------------------------------
# They run with require_csrf=False (Pyramid's check would parse an upload body
# through request.POST, and the host's policy may keep its token elsewhere) and
# call these instead, whatever the host's CSRF policy.


def check_origin(request: Request) -> None:
    """Pyramid's HTTPS ``Origin``/``Referer`` check, with the host's options."""
    options = request.registry.queryUtility(IDefaultCSRFOptions)
    try:
        check_csrf_origin(request, raises=True, allow_no_origin=getattr(options, "allow_no_origin", False))
    except BadCSRFOrigin:
        raise CSRFRefused("Cross-origin request refused (Origin/Referer check)", code="csrf_origin") from None


def check_token(request: Request, supplied: str | None) -> None:
    """Raise :class:`CSRFRefused` unless ``supplied`` is this visitor's token."""
    if not supplied:
        raise CSRFRefused(f"CSRF token missing: {HOW_TO}", code="csrf_token_missing")
    if not check_csrf(request, supplied):
        raise CSRFRefused(f"CSRF token incorrect or expired: {HOW_TO}")


def require_csrf(request: Request) -> None:
    """Check a small state-changing request: origin, then the token from the
    header or (urlencoded forms only) the ``csrf_token`` field."""
    check_origin(request)
    supplied = request.headers.get(CSRF_HEADER)
    if supplied is None and request.content_type == "application/x-www-form-urlencoded":
        supplied = request.POST.get(CSRF_FIELD)
    check_token(request, supplied)
