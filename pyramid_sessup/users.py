"""Sessions per user: list a user's signed-in sessions, revoke one, sign out everywhere.

``request.session.sign_in(user_id)`` binds the session to a user: it keeps the
user ID in the record (a reserved key, never in ``request.session``), gives the
session a new ID and a new CSRF token (what a login must do anyway), and
links the new ID in the *user index* of the store.  Then::

    list_sessions(request)                      # -> [SessionInfo, ...], most recently seen first
    revoke_session(request, info.handle)        # end one of them
    revoke_all_sessions(request)                # "sign out everywhere else"
    request.session.sign_out()                  # this one

A revoked session is dead at once, for good (the store's ``delete`` leaves a
tombstone): the next request with its cookie is anonymous.

What is shown
    A :class:`SessionInfo` names a session by its *handle*, an HMAC of its ID
    (22 characters), never by the ID itself: the ID is a bearer secret that
    must never reach a page.  Its "last seen" time is written at most once per
    ``sessup.session.users.seen_interval`` (60 s), so read-only requests stay
    a single expiry slide; the User-Agent (``users.record_agent``, on) and the
    client address (``users.record_address``, off: an address is personal data
    some sites must not keep) are recorded at sign-in and with "last seen".

What the store sees
    The store indexes sessions under a *user key*, the HMAC-SHA256 of the user
    ID with a key derived from a secret, never the user ID (often an e-mail
    address): a leaked index does not list the users.  Secrets rotate
    (``sessup.session.secret``: the first signs, all verify), and a new first
    secret changes every user key.  So entries are linked under the *first*
    secret's key, while listing and revoking look under the key of *every*
    configured secret: nothing linked before a rotation is lost, and each
    session is re-linked under the new key the next time its "last seen" is
    written.  Once the old secret is dropped from the settings its keys are no
    longer computed; by then every session still alive has been re-linked (it
    is seen at least once per timeout, or it has expired), and the stores
    prune the old entries.

Consistency
    The index is only a hint: listing loads each record (without touching it)
    and shows only live sessions still bound to that user, so an expired,
    revoked or signed-out session never lists.  Sign-in links the index entry
    *before* the record exists under its new ID, and sign-out, revoke and
    regenerate unlink only *after* the record died, so a crash never leaves a
    bound session out of the list.  An entry whose record is gone is pruned
    when listing finds it, once it was linked more than a session timeout ago
    (younger, it may belong to a sign-in still under way); the stores prune
    the same way as they go and in ``purge_expired``.

For scripts (``sessup-sessions INI list --user ID``), :func:`sessions_of`,
:func:`revoke_handle`, :func:`revoke_all` and :func:`revoke_id` take the store
and the :class:`UsersConfig` of the parsed settings instead of a request.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .exceptions import SessionValueError
from .session import ADDR_KEY, AGENT_KEY, CREATED_KEY, SEEN_KEY, USER_KEY, SessupSession
from .stores.base import SessionStore, valid_session_id

if TYPE_CHECKING:
    from pyramid.request import Request

    from .settings import SessupSettings

__all__ = ["SessionInfo", "UsersConfig", "list_sessions", "revoke_session", "revoke_all_sessions",
           "sessions_of", "revoke_handle", "revoke_all", "revoke_id", "HANDLE_LENGTH"]

#: Characters of a handle: base64url of 16 bytes of HMAC-SHA256 (128 bits).
HANDLE_LENGTH = 22
#: Longest user ID accepted by ``sign_in`` (characters).
MAX_USER_ID = 1024
#: Longest User-Agent kept (characters): enough to tell browsers apart.
MAX_AGENT = 256


@dataclass(frozen=True)
class SessionInfo:
    """One signed-in session of a user, as a page or a script may show it."""

    #: A public name of the session (an HMAC of its ID); never the session ID.
    handle: str
    #: When the session was created (seconds since the epoch).
    created: float
    #: When it was last seen (written at most once per ``seen_interval``).
    last_seen: float
    #: The User-Agent at sign-in or last seen; None when not recorded.
    user_agent: str | None
    #: The client address; None when not recorded (the default).
    client_addr: str | None
    #: Whether this is the session of the request that asked.
    current: bool


def _derive(purpose: bytes, secret: str) -> bytes:
    # Keys derived per purpose: distinct from the cookie-signing and CSRF keys of the same secret.
    return hashlib.sha256(b"pyramid_sessup." + purpose + b"\x00" + secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class UsersConfig:
    """The ``sessup.session.users.*`` values and the keys derived from the secrets."""

    #: One key per secret, the first secret's first: user keys of the index.
    index_keys: tuple[bytes, ...]
    #: One key per secret, the first secret's first: session handles.
    handle_keys: tuple[bytes, ...]
    record_agent: bool
    record_address: bool
    #: Seconds between two writes of "last seen" (capped at the timeout).
    seen_interval: int

    @classmethod
    def from_values(cls, values: SessupSettings) -> UsersConfig:
        secrets = values.session.secret
        if not secrets:
            raise ValueError("at least one secret is required")
        return cls(
            index_keys=tuple(_derive(b"user-index", s) for s in secrets),
            handle_keys=tuple(_derive(b"session-handle", s) for s in secrets),
            record_agent=values.session.users_record_agent,
            record_address=values.session.users_record_address,
            # The store's index outlives its sessions only if each is re-linked at
            # least once per timeout (SessionStore.index_ttl).
            seen_interval=min(values.session.users_seen_interval, values.session.timeout),
        )

    def user_key(self, user_id: str) -> str:
        """The key that links new entries: the first secret's."""
        return hmac.new(self.index_keys[0], user_id.encode("utf-8"), "sha256").hexdigest()

    def user_keys(self, user_id: str) -> list[str]:
        """The user's key under every secret (the first secret's first): where to look."""
        keys: list[str] = []
        for key in self.index_keys:
            digest = hmac.new(key, user_id.encode("utf-8"), "sha256").hexdigest()
            if digest not in keys:
                keys.append(digest)
        return keys

    def handle(self, sid: str) -> str:
        """The public handle of session ``sid`` (under the first secret)."""
        return self._handle(self.handle_keys[0], sid)

    def matches(self, sid: str, handle: str) -> bool:
        """Whether ``handle`` names ``sid`` under any secret (constant time)."""
        given = handle.encode("utf-8", "backslashreplace")
        ok = False
        for key in self.handle_keys:  # every key, no early exit
            ok |= hmac.compare_digest(self._handle(key, sid).encode("ascii"), given)
        return ok

    @staticmethod
    def _handle(key: bytes, sid: str) -> str:
        digest = hmac.digest(key, sid.encode("ascii"), "sha256")[:16]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_user_id(user_id: Any) -> str:
    """``user_id`` if it can name a user; :class:`SessionValueError` otherwise."""
    if not isinstance(user_id, str) or not user_id:
        raise SessionValueError("a user ID must be a non-empty string")
    if len(user_id) > MAX_USER_ID or "\x00" in user_id:
        raise SessionValueError(f"a user ID must be at most {MAX_USER_ID} characters, without NUL")
    return user_id


def clean_agent(value: str | None) -> str | None:
    """A User-Agent fit to keep and to print: printable characters only (no
    terminal escapes for whoever lists it), at most :data:`MAX_AGENT`."""
    if not value:
        return None
    text = "".join(ch for ch in value if ch.isprintable())[:MAX_AGENT].strip()
    return text or None


# -- registry level: a store and the settings ------------------------------------------------

def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _live(store: SessionStore, users: UsersConfig, user_id: str) -> dict[str, tuple[dict[str, Any], list[str]]]:
    """sid -> (record, the user keys it is linked under), for the user's live sessions.

    Prunes what is certainly stale: an entry whose record is bound to someone
    else, or gone while its entry is older than a timeout (a younger one may be
    a sign-in that has linked its entry and not yet written the record).
    """
    links: dict[str, list[tuple[str, float]]] = {}
    for key in users.user_keys(user_id):
        for sid, linked in store.user_sessions(key):
            links.setdefault(sid, []).append((key, linked))
    now = time.time()
    live: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for sid, found in links.items():
        record = store.load(sid, touch=False) if valid_session_id(sid) else None  # looking must not extend a life
        if record is not None and record.get(USER_KEY) == user_id:
            live[sid] = (record, [key for key, _ in found])
            continue
        for key, linked in found:
            if record is not None or linked <= now - store.timeout:
                store.unlink_user(key, sid)
    return live


def _info(users: UsersConfig, sid: str, record: dict[str, Any], current: str | None, now: float) -> SessionInfo:
    created = _number(record.get(CREATED_KEY), 0.0)
    seen = _number(record.get(SEEN_KEY), created)
    return SessionInfo(
        handle=users.handle(sid),
        created=created,
        # This very request sees the current session now.
        last_seen=now if sid == current else seen,
        user_agent=_text(record.get(AGENT_KEY)),
        client_addr=_text(record.get(ADDR_KEY)),
        current=sid == current,
    )


def sessions_of(store: SessionStore, users: UsersConfig, user_id: str, *,
                current: str | None = None) -> list[SessionInfo]:
    """The live sessions of ``user_id``, most recently seen first; ``current`` is
    the ID of the session to mark as the asking one."""
    check_user_id(user_id)
    now = time.time()
    infos = [_info(users, sid, record, current, now) for sid, (record, _) in _live(store, users, user_id).items()]
    infos.sort(key=lambda info: (info.last_seen, info.created), reverse=True)
    return infos


def _kill(store: SessionStore, sid: str, keys: list[str]) -> None:
    store.delete(sid)  # first: the record dies (a tombstone), then its entries go
    for key in keys:
        store.unlink_user(key, sid)


def revoke_handle(store: SessionStore, users: UsersConfig, user_id: str, handle: str) -> str | None:
    """Revoke the session of ``user_id`` named by ``handle``; its ID, or None if
    no live session of that user has that handle."""
    check_user_id(user_id)
    if not isinstance(handle, str) or len(handle) != HANDLE_LENGTH:
        return None
    for sid, (_, keys) in _live(store, users, user_id).items():
        if users.matches(sid, handle):
            _kill(store, sid, keys)
            return sid
    return None


def revoke_all(store: SessionStore, users: UsersConfig, user_id: str, *, keep: str | None = None) -> list[str]:
    """Revoke every live session of ``user_id`` but the one whose ID is ``keep``;
    returns the IDs revoked."""
    check_user_id(user_id)
    revoked = []
    for sid, (_, keys) in _live(store, users, user_id).items():
        if sid != keep:
            _kill(store, sid, keys)
            revoked.append(sid)
    return revoked


def revoke_id(store: SessionStore, users: UsersConfig, sid: str) -> bool:
    """Revoke session ``sid`` (and unlink it from its user's index); False if no
    readable session had that ID (it is dead afterwards all the same)."""
    record = store.load(sid, touch=False)
    store.delete(sid)
    user_id = record.get(USER_KEY) if record is not None else None
    if isinstance(user_id, str) and user_id:
        for key in users.user_keys(user_id):
            store.unlink_user(key, sid)
    return record is not None


# -- request level ---------------------------------------------------------------------------

def _session(request: Request) -> SessupSession:
    session = request.session
    getter = getattr(session, "_session", None)
    inner = getter() if getter is not None else session
    if not isinstance(inner, SessupSession):
        raise TypeError("request.session is not a pyramid_sessup session")
    return inner


def _user(session: SessupSession, user_id: str | None) -> str | None:
    return session.user_id if user_id is None else check_user_id(user_id)


def _current(session: SessupSession) -> str | None:
    """The ID of the request's session if it is stored and alive."""
    return None if session.is_new or session.anonymous or session.dead else session.id


def list_sessions(request: Request, user_id: str | None = None) -> list[SessionInfo]:
    """The live sessions of ``user_id`` (default: the user of ``request.session``;
    none if it is not signed in), most recently seen first."""
    session = _session(request)
    user = _user(session, user_id)
    if user is None:
        return []
    return sessions_of(session.store, session.config.users, user, current=_current(session))


def revoke_session(request: Request, handle: str, user_id: str | None = None) -> bool:
    """Revoke one session of ``user_id`` (default: the signed-in user) by its
    handle; True if one was revoked.  A handle of another user's session, an
    unknown or a malformed one revokes nothing.  Revoking the request's own
    session signs it out (this response clears its cookie)."""
    session = _session(request)
    user = _user(session, user_id)
    if user is None:
        return False
    current = _current(session)
    users = session.config.users
    if current is not None and session.user_id == user and isinstance(handle, str) \
            and len(handle) == HANDLE_LENGTH and users.matches(current, handle):
        session.sign_out()
        return True
    return revoke_handle(session.store, users, user, handle) is not None


def revoke_all_sessions(request: Request, user_id: str | None = None, *, keep_current: bool = True) -> int:
    """Revoke every session of ``user_id`` (default: the signed-in user): "sign
    out everywhere".  With ``keep_current`` (the default) the request's own
    session stays; otherwise it is signed out too.  Returns how many sessions
    were revoked."""
    session = _session(request)
    user = _user(session, user_id)
    if user is None:
        return 0
    current = _current(session)
    own = current is not None and session.user_id == user
    revoked = len(revoke_all(session.store, session.config.users, user, keep=current if own else None))
    if own and not keep_current:
        session.sign_out()
        revoked += 1
    return revoked
