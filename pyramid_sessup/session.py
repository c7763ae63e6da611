"""express-session's semantics on Beaker, without Beaker's flaws.

The factory returned by :func:`session_factory_from_values` is a
pyramid_beaker session class (Beaker's lazy ``SessionObject`` with Pyramid's
``ISession`` API: flash messages, CSRF tokens) whose Beaker ``Session`` is a
:class:`SessupSession`.  The layer adds, over a pluggable JSON-only store:

* signed IDs with secret rotation; unknown, tampered, malformed or oversized
  cookies count as no cookie and never reach the store; several session
  cookies that disagree count as none, and nothing is stored for them;
* CSRF tokens kept out of the store (:mod:`pyramid_sessup.csrf`), rotated by
  ``regenerate()`` and ``invalidate()``;
* ``save_uninitialized``, ``resave``, ``rolling``, ``unset`` and cookie options
  as in express-session;
* writes as per-key merges of what this request changed (nested mutations
  included), so concurrent requests do not undo each other; read-only requests
  only slide the expiry;
* ``regenerate()`` and ``invalidate()`` kill the old ID at once, for good: the
  store keeps a tombstone, and a request still running on a session that was
  logged out (or that expired) meanwhile writes nothing and clears its cookie;
* an absolute lifetime (``max_lifetime``) and transparent ID rotation
  (``rotate_after``, ``rotate_grace``), below;
* optional per-session locking; a policy for when the store is down;
* sessions per user: ``sign_in(user_id)`` binds a session to a user, indexed
  in the store under an HMAC of the user ID, so that the user's sessions can
  be listed and revoked (:mod:`pyramid_sessup.users`).

Absolute lifetime.  Every record keeps its creation time (``_created``, kept
by ``regenerate()`` and rotation).  A request whose session is older than
``max_lifetime`` deletes it (a tombstone, like a logout), gets a new empty
session, and has its cookie cleared unless that new session sets one.

ID rotation.  Every record also keeps when its current ID was issued
(``_issued``: at creation, ``regenerate()`` and rotation).  At the end of the
first request that finds its ID older than ``rotate_after`` (a failed request
rotates nothing), the layer asks the store to :meth:`~.stores.base.SessionStore.rotate`
it: one atomic step moves the stored record, with this request's changes
merged in, to a new ID and leaves under the old ID a tombstone that forwards
to the new ID for ``rotate_grace`` seconds.  The response carries the new
cookie; the CSRF token is untouched (a rotation is not a login); the
:meth:`SessupSession._moved` hook hears of it.  Requests that still carry the
old ID:

* if they arrive during the grace, loading the old ID finds the forward and
  loads the new ID instead (and the response carries the new cookie): the
  same session, never a second record of it;
* if they loaded the old ID before the rotation, their write finds the old ID
  dead, looks up its forward and lands on the new ID: nothing is lost
  (different keys merge as always; with ``sessup.session.lock`` every request
  of the session is serialized: the rotating request holds the old ID's lock,
  and a request waiting for it then finds the forward and takes the new ID's
  lock before loading it, so no increment is lost);
* if they arrive after the grace, the old ID is an ordinary tombstone: a new,
  empty session.  A stolen old cookie thus revives nothing.

Of two requests that both find the ID due, one rotates (the store's move is
atomic) and the other follows the forward.  ``regenerate()`` and
``invalidate()`` during the grace, from either ID, end the session under both:
following a forward never leads past a dead record, and deleting an old ID
deletes the ID it forwards to (:meth:`~.stores.base.SessionStore.kill`).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from beaker.session import Session as BeakerSession
from beaker.session import SessionObject
from pyramid.interfaces import ISession
from pyramid.request import Request
from pyramid.response import Response
from pyramid_beaker import BeakerSessionFactoryConfig
from zope.interface import implementer

from . import csrf
from .cookies import read_cookie
from .exceptions import SessionValueError, StoreUnavailable
from .settings import SessupSettings
from .signing import Signer, new_session_id
from .stores.base import MAX_FORWARDS, Forward, SessionStore, dumps

if TYPE_CHECKING:
    from .users import UsersConfig

log = logging.getLogger("pyramid_sessup.session")

T = TypeVar("T")

#: Key of the creation time inside every record (seconds since the epoch).
CREATED_KEY = "_created"

#: Keys of a signed-in session (:mod:`pyramid_sessup.users`): the user ID, when
#: it was last seen (seconds since the epoch), its User-Agent and client address.
USER_KEY = "_user"
SEEN_KEY = "_seen"
AGENT_KEY = "_agent"
ADDR_KEY = "_addr"
#: Key of the time the record's current ID was issued (creation, ``regenerate()``,
#: rotation), which ``sessup.session.rotate_after`` counts from.
ISSUED_KEY = "_issued"

#: Keys the layer keeps in a record beside the application's own (creation time,
#: the bound user, ...).  They are never visible in ``request.session`` and the
#: application cannot set them; :meth:`SessupSession.set_meta` writes them.
RESERVED_KEYS = frozenset({CREATED_KEY, ISSUED_KEY, USER_KEY, SEEN_KEY, AGENT_KEY, ADDR_KEY})


@dataclass(frozen=True)
class SessionConfig:
    """The ``sessup.session.*`` values the layer uses, resolved once at start-up."""

    signer: Signer
    name: str
    timeout: int
    max_lifetime: int
    rotate_after: int
    rotate_grace: int
    resave: bool
    save_uninitialized: bool
    rolling: bool
    unset: str
    lock: bool
    lock_timeout: float
    on_store_error: str
    max_age: int | None
    httponly: bool
    secure: str
    samesite: str
    path: str
    domain: str | None
    users: UsersConfig

    @classmethod
    def from_values(cls, values: SessupSettings) -> SessionConfig:
        from .users import UsersConfig  # users imports this module

        return cls(
            signer=Signer(values.session.secret),
            name=values.session.name,
            timeout=values.session.timeout,
            max_lifetime=values.session.max_lifetime,
            rotate_after=values.session.rotate_after,
            rotate_grace=values.session.rotate_grace,
            resave=values.session.resave,
            save_uninitialized=values.session.save_uninitialized,
            rolling=values.session.rolling,
            unset=values.session.unset,
            lock=values.session.lock,
            lock_timeout=values.session.lock_timeout,
            on_store_error=values.session.on_store_error,
            max_age=values.session.cookie_max_age,
            httponly=values.session.cookie_httponly,
            secure=values.session.cookie_secure,
            samesite=values.session.cookie_samesite,
            path=values.session.cookie_path,
            domain=values.session.cookie_domain,
            users=UsersConfig.from_values(values),
        )


class _Incidents:
    """Logs one error line when the store goes down and one when it is back,
    not one per request."""

    def __init__(self) -> None:
        self._down_since: float | None = None  # monotonic time of the first failure
        self._lock = threading.Lock()

    def failed(self, exc: BaseException, policy: str) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        action = "answering 503" if policy == "fail" else "serving requests without a session"
        log.error("session store unavailable (%s); %s until it recovers", exc, action)

    def succeeded(self, started: float) -> None:
        """A store call that ``started`` (monotonic time) has just succeeded."""
        if self._down_since is not None:
            with self._lock:
                # A call already under way when the outage was noticed (it finished
                # as the server went down) proves nothing: without this, one
                # incident was logged as two, "back" a few milliseconds after "down".
                if self._down_since is None or started < self._down_since:
                    return
                self._down_since = None
            log.warning("session store reachable again")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def _encode(key: str, value: Any) -> str:
    try:
        encoded = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SessionValueError(f"session value for key {key!r} cannot be stored as JSON: {exc}") from None
    # PostgreSQL's jsonb cannot hold NUL; refuse it for every store, at assignment time.
    if "\x00" in key or ("\\u0000" in encoded and _has_nul(value)):
        raise SessionValueError(f"session value for key {key!r} contains a NUL character, which cannot be stored")
    return encoded


class SessupSession(BeakerSession):
    """One request's view of a session (a dict of JSON values).

    Created lazily, the first time the request touches ``request.session``.
    """

    def __init__(self, request: Request, config: SessionConfig, store: SessionStore,
                 incidents: _Incidents) -> None:
        dict.__init__(self)
        self.request = request
        self.config = config
        self.store = store
        self.incidents = incidents
        self.key = config.name
        self.timeout = config.timeout
        self.id: str = ""
        self.is_new = True
        self.anonymous = False  # the store is down and policy = anonymous
        self.accessed_dict: dict[str, Any] = {}
        self.last_accessed: float | None = None
        self._snapshot: dict[str, str] = {}  # key -> JSON as loaded/last written
        self._send_cookie = False
        self._clear_cookie = False
        self._dead = False  # logged out or expired under this request: write nothing more
        self._force_full = False
        self._lock_token: Any = None
        self._locked_sid = ""
        self._created = time.time()
        self._cookie_value = ""  # the incoming cookie, reused while the ID stays the same
        self._loaded_record: str | None = None
        self._meta: dict[str, Any] = {}  # reserved keys of the record, as loaded or set
        self._meta_changed: dict[str, Any] = {}  # reserved keys to write (None: remove)
        self._linked_user: str | None = None  # whose user index holds the stored record's ID
        self._prelinked = ""  # an ID linked in the user index before its record was written
        self._relink = False  # "last seen" is written by this request: refresh the index entry too

        incoming, ambiguous = read_cookie(request.environ, config.name)
        if ambiguous:
            # Several session cookies that disagree (one planted by a sibling
            # subdomain?): trust none, and store nothing for this request.
            self.anonymous = True
            self.id = new_session_id()
            return
        parsed = config.signer.unsign(incoming)
        if parsed is not None:
            sid, current_secret = parsed
            if current_secret:
                self._cookie_value = incoming  # type: ignore[assignment]
            found = self._load_existing(sid)
            if found is not None:
                self.id, data = found
                self.is_new = False
                if store.compare_and_set:
                    # The record as loaded: lets the store swap in the merge without re-reading it.
                    self._loaded_record = dumps(data)
                self._take_meta(data)
                self.last_accessed = self._created
                dict.update(self, data)
                self._snapshot = {k: _encode(k, v) for k, v in data.items()}
                self.accessed_dict = dict(data)
                # Re-issue cookies signed with an older secret (secret rotation), and
                # the cookie of an ID that was rotated (the client still sent the old one).
                self._send_cookie = not current_secret or self.id != sid
                return
            self._release_lock()
        # No cookie, a bad one, or an unknown/expired ID: a new ID, never the client's.
        self.id = new_session_id()

    # -- reserved keys ---------------------------------------------------------------
    def _take_meta(self, data: dict[str, Any]) -> None:
        """Move the reserved keys out of a loaded record into ``_meta``."""
        self._meta = {key: data.pop(key) for key in RESERVED_KEYS if key in data}
        self._meta_changed = {}
        self._created = float(self._meta.get(CREATED_KEY) or self._created)
        self._linked_user = self.user_id

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A reserved key's value (see :data:`RESERVED_KEYS`)."""
        return self._meta.get(key, default)

    def set_meta(self, key: str, value: Any) -> None:
        """Set (or, with ``None``, remove) a reserved key; written at the end of the request."""
        if key not in RESERVED_KEYS:
            raise KeyError(f"{key!r} is not a reserved session key")
        if value is None:
            self._meta.pop(key, None)
        else:
            self._meta[key] = value
        self._meta_changed[key] = value

    def _moved(self, old: str, new: str) -> None:
        """The stored session ``old`` now lives under ``new`` (regenerate, ID rotation):
        the hook for what refers to session IDs outside the record.

        A signed-in session's user index entry follows it: ``new`` is linked
        (unless :meth:`_link_ahead` did it before the move) and ``old``, dead
        now, is unlinked from the index that held it.
        """
        user = self.user_id
        if user is not None and self._prelinked != new:
            self._store_call(self.store.link_user, self.config.users.user_key(user), new)
        self._prelinked = ""
        self._unlink(old)
        self._linked_user = user

    # -- sessions per user (pyramid_sessup.users) -------------------------------------
    @property
    def user_id(self) -> str | None:
        """The user this session is signed in as, or None."""
        value = self._meta.get(USER_KEY)
        return value if isinstance(value, str) and value else None

    @property
    def dead(self) -> bool:
        """Whether the stored session ended while this request ran (revoked, expired)."""
        return self._dead

    def sign_in(self, user_id: str) -> None:
        """Bind the session to ``user_id``: what a login does.

        The session gets a new ID (against fixation; the old one is dead at
        once) and a new CSRF token, keeps its data, and is stored at once,
        linked in the user index (before its record exists under the new ID,
        so no crash leaves it unlisted).  A session that was signed in as
        someone else leaves that user's index.  With the store down and
        ``on_store_error = anonymous``, nothing is stored: the user is bound
        for this request only.
        """
        from .users import check_user_id, clean_agent

        check_user_id(user_id)
        for _ in range(2):
            if self._dead:
                # Revoked or expired while this request ran (before, or during the
                # move to the new ID): the login still succeeds, on a fresh session.
                self._reset()
            users = self.config.users
            self.set_meta(USER_KEY, user_id)
            self.set_meta(SEEN_KEY, time.time())
            if users.record_agent:
                self.set_meta(AGENT_KEY, clean_agent(self.request.user_agent))
            if users.record_address:
                self.set_meta(ADDR_KEY, self.request.remote_addr or None)
            self._regenerate(create=True)
            if not self._dead:
                return

    def sign_out(self) -> None:
        """End this signed-in session: its record dies (and leaves the user index),
        and the request continues with a new, empty session (see :meth:`invalidate`)."""
        self.invalidate()

    def _link_ahead(self, sid: str) -> None:
        """Link ``sid`` in the user index before its record is written (signed-in sessions)."""
        user = self.user_id
        if user is not None and not self.anonymous:
            self._store_call(self.store.link_user, self.config.users.user_key(user), sid)
            self._prelinked = sid

    def _unlink_ahead(self) -> None:
        """Undo :meth:`_link_ahead`: the record was not written after all."""
        user, sid = self.user_id, self._prelinked
        self._prelinked = ""
        if user is not None and sid:
            self._store_call(self.store.unlink_user, self.config.users.user_key(user), sid)

    def _unlink(self, sid: str) -> None:
        """Remove the dead ``sid`` from the index that held the stored record."""
        if self._linked_user is not None:
            for key in self.config.users.user_keys(self._linked_user):
                self._store_call(self.store.unlink_user, key, sid)

    def _seen_now(self) -> dict[str, Any]:
        """The reserved keys to write because the signed-in session's "last seen"
        is older than the interval (nothing otherwise)."""
        if self.user_id is None:
            return {}
        now = time.time()
        seen = self._meta.get(SEEN_KEY)
        if isinstance(seen, (int, float)) and 0 <= now - seen < self.config.users.seen_interval:
            return {}
        from .users import clean_agent

        users = self.config.users
        update: dict[str, Any] = {SEEN_KEY: now}
        if users.record_agent:
            agent = clean_agent(self.request.user_agent)
            if agent and agent != self._meta.get(AGENT_KEY):
                update[AGENT_KEY] = agent
        if users.record_address:
            addr = self.request.remote_addr
            if addr and addr != self._meta.get(ADDR_KEY):
                update[ADDR_KEY] = addr
        self._meta.update(update)
        self._relink = True
        return update

    def _relinked(self) -> None:
        """After "last seen" was written: refresh the index entry under the first
        secret's key (its expiry, and a move away from a rotated-out secret's key)."""
        if self._relink:
            self._relink = False
            user = self.user_id
            if user is not None:
                self._store_call(self.store.link_user, self.config.users.user_key(user), self.id)

    # -- loading and locking ---------------------------------------------------------
    def _store_call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        started = time.monotonic()
        try:
            result = fn(*args, **kw)
        except StoreUnavailable as exc:
            self.incidents.failed(exc, self.config.on_store_error)
            raise
        self.incidents.succeeded(started)
        return result

    def _load_existing(self, sid: str) -> tuple[str, dict[str, Any]] | None:
        """The live session the cookie's ``sid`` leads to (following the forward of a
        rotated ID): its ID and data, under its lock in lock mode; or ``None``."""
        if self.config.lock:
            self.request.add_finished_callback(lambda request: self._release_lock())
        try:
            for _ in range(MAX_FORWARDS + 1):
                if self.config.lock:
                    self._lock_token = self._store_call(self.store.acquire_lock, sid, self.config.lock_timeout)
                    self._locked_sid = sid
                found = self._store_call(self.store.lookup, sid)
                if not isinstance(found, Forward):
                    break
                # Rotated (perhaps while we waited for its lock): the session lives
                # under the new ID now; its lock, not the old one, orders our writes.
                self._release_lock()
                sid = found.target
            else:
                return None
            if found is None:
                return None
            if self._past_lifetime(found):
                self._store_call(self.store.kill, sid)
                self._clear_cookie = True
                return None
            return sid, found
        except StoreUnavailable:
            if self.config.on_store_error == "anonymous":
                self.anonymous = True
                return None
            raise

    def _past_lifetime(self, data: dict[str, Any]) -> bool:
        """Whether the loaded record outlived ``max_lifetime``; a record whose
        creation time is missing or unreadable cannot prove its age and counts as
        too old."""
        if not self.config.max_lifetime:
            return False
        created = data.get(CREATED_KEY)
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            return True
        return time.time() - created >= self.config.max_lifetime

    def _release_lock(self) -> None:
        if self._lock_token is not None:
            token, self._lock_token = self._lock_token, None
            try:
                self.store.release_lock(self._locked_sid, token)
            except StoreUnavailable:  # the lock expires by itself
                pass

    # -- dict API: values must be JSON, checked when set ------------------------------
    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise SessionValueError(f"session keys must be strings, not {type(key).__name__}")
        if key in RESERVED_KEYS:
            raise SessionValueError(f"session key {key!r} is reserved by pyramid_sessup")
        _encode(key, value)
        dict.__setitem__(self, key, value)

    def update(self, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kw).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    # -- express-session's API ----------------------------------------------------------
    @property
    def created(self) -> float:
        return self._created

    @property
    def expires_at(self) -> float:
        """When the session expires if it sees no further request (or, with
        ``max_lifetime``, when it ends anyway, if that comes first)."""
        idle = time.time() + self.timeout
        if self.config.max_lifetime:
            return min(idle, self._created + self.config.max_lifetime)
        return idle

    def regenerate(self) -> None:
        """New ID, same data; the old ID is dead at once (against fixation).
        The CSRF token changes too: tokens issued before are refused."""
        self._regenerate(create=False)

    def _regenerate(self, create: bool) -> None:
        """:meth:`regenerate`; with ``create``, a new session is stored even if empty."""
        csrf.rotate(self.request)
        old = None if self.is_new else self.id
        new = new_session_id()
        self._loaded_record = None
        if self.anonymous or self._dead:
            self.id = new
            return
        self._meta[ISSUED_KEY] = time.time()
        if old is not None:
            self._link_ahead(new)
            # One atomic step: the new record, and a tombstone for the old ID.  It
            # fails if the old session was logged out or expired meanwhile (one
            # rotated meanwhile moves from the ID it was rotated to).
            moved_from = self._write(lambda sid: sid if self.store.move(sid, new, self._full_record()) else None)
            self.id = new
            if moved_from is None:
                self._unlink_ahead()  # the record will never exist under that ID
                return
            self._moved(moved_from, new)
        else:
            self.id = new
            if not (create or dict.__len__(self) or self.config.save_uninitialized):
                return
            self._create_record()
        self._snapshot = {k: _encode(k, v) for k, v in self.items()}
        self._meta_changed = {}
        self.is_new = False
        self._send_cookie = True

    regenerate_id = regenerate

    def invalidate(self) -> None:
        """Delete the stored record and start an empty session under a new ID;
        the CSRF token changes too.  A signed-in session leaves its user's index."""
        csrf.rotate(self.request)
        if not self.is_new and not self.anonymous and not self._dead:
            self._delete_record()
            self._clear_cookie = True
        self._reset()

    def _delete_record(self) -> None:
        """The stored record dies (a tombstone; ``kill``: a rotated ID's forward leads
        to the session too), then its user index entry goes."""
        self._store_call(self.store.kill, self.id)
        self._unlink(self.id)

    def _reset(self) -> None:
        """Start an empty, unsigned session under a new ID (nothing is stored yet)."""
        self._dead = False
        dict.clear(self)
        self._snapshot = {}
        self.accessed_dict = {}
        self._meta = {}
        self._meta_changed = {}
        self.id = new_session_id()
        self.is_new = True
        self._created = time.time()
        self._send_cookie = False
        self._linked_user = None
        self._prelinked = ""
        self._relink = False

    def delete(self) -> None:
        self.invalidate()

    def touch(self) -> None:
        """Slide the expiry now, without rewriting the data."""
        if not self.is_new and not self.anonymous:
            self._store_call(self.store.touch, self.id)

    def save(self, accessed_only: bool = False) -> None:
        """Write the whole session to the store now."""
        if self.anonymous or accessed_only or self._dead:
            return
        if self.is_new:
            self._create_record()
            self.is_new = False
            self._send_cookie = True
        else:
            self._seen_now()
            if self._write(lambda sid: self.store.replace(sid, self._full_record()) or None) is None:
                return
            self._relinked()
        self._snapshot = {k: _encode(k, v) for k, v in self.items()}
        self._meta_changed = {}
        self._loaded_record = None

    def reload(self) -> None:
        """Re-read the session from the store, dropping this request's unsaved changes."""
        if self.is_new or self.anonymous:
            return
        data = self._store_call(self.store.lookup, self.id)
        if isinstance(data, Forward) and self._follow():
            data = self._store_call(self.store.load, self.id)
        if isinstance(data, Forward):  # a chain the layer does not follow this far
            data = None
        dict.clear(self)
        self._loaded_record = dumps(data) if data is not None and self.store.compare_and_set else None
        if data is None:  # expired or deleted meanwhile
            self.invalidate()
            return
        self._take_meta(data)
        dict.update(self, data)
        self._snapshot = {k: _encode(k, v) for k, v in data.items()}

    def load(self) -> None:
        self.reload()

    def changed(self) -> None:
        """Mark every key as changed (Pyramid's ISession API)."""
        self._force_full = True

    # -- CSRF: tokens live outside the store (see pyramid_sessup.csrf) ---------------------
    def get_csrf_token(self) -> str:
        return csrf.get_csrf_token(self.request)

    def new_csrf_token(self) -> str:
        return csrf.new_csrf_token(self.request)

    # -- end of request ----------------------------------------------------------------
    def _create_record(self) -> None:
        """Store this new session; an ID that is taken (or a tombstone) is never reused.
        A signed-in one is linked in its user's index first."""
        self._meta.setdefault(ISSUED_KEY, self._created)
        while True:
            self._link_ahead(self.id)
            if self._store_call(self.store.create, self.id, self._full_record()):
                break
            self._unlink_ahead()
            self.id = new_session_id()  # astronomically unlikely collision
        self._prelinked = ""
        self._linked_user = self.user_id

    def _follow(self) -> bool:
        """This request's ID was found dead while writing: if another request
        rotated it, continue under the ID it now lives under (True); otherwise the
        session is over (False)."""
        found = self._store_call(self.store.lookup, self.id, touch=False)
        if not isinstance(found, Forward):
            return False
        self._adopt(found.target)
        return True

    def _adopt(self, target: str) -> None:
        """Continue under ``target``, the ID another request rotated this one to."""
        self.id = target
        self._loaded_record = None  # the record there is not the one this request loaded
        # Issued a moment ago (while this request ran): a full write must not
        # carry the old ID's issue time over, or the next request would rotate again.
        self._meta[ISSUED_KEY] = time.time()
        self._send_cookie = True  # the client may still hold the old ID

    def _write(self, op: Callable[[str], T | None]) -> T | None:
        """``op(sid)`` on this session's ID; if it finds the ID dead because it was
        rotated meanwhile, again on the ID the session lives under now.  ``None``
        (and :meth:`_gone`) if the session is over."""
        for _ in range(MAX_FORWARDS + 1):
            result = self._store_call(op, self.id)
            if result is not None:
                return result
            if not self._follow():
                break
        self._gone()
        return None

    def _rotate(self, changed: dict[str, Any], removed: list[str]) -> bool:
        """Give the session a new ID, writing this request's changes on the way
        (see the module docstring); False if another request rotated it first
        (this request then continues under that ID), if the store could not
        rotate it now (it keeps its ID until a later request), or if the session
        is over."""
        old, new, now = self.id, new_session_id(), time.time()
        changed = {**changed, ISSUED_KEY: now}
        expected = self._loaded_record if not self._force_full else None
        self._link_ahead(new)  # before the record exists under it, as at sign-in
        record = self._store_call(self.store.rotate, old, new, changed, removed,
                                  grace=self.config.rotate_grace, expected=expected)
        if record is None:
            self._unlink_ahead()
            found = self._store_call(self.store.lookup, old, touch=False)
            if isinstance(found, Forward):
                self._adopt(found.target)
            elif found is None:
                self._gone()
            # else still live under its ID (the store could not rotate it now): a later request will.
            return False
        self.id = new
        self._meta[ISSUED_KEY] = now
        self._loaded_record = None
        self._send_cookie = True
        self._moved(old, new)
        return True

    def _due_for_rotation(self) -> bool:
        if not self.config.rotate_after:
            return False
        issued = self._meta.get(ISSUED_KEY, self._created)
        if not isinstance(issued, (int, float)) or isinstance(issued, bool):
            return True
        return time.time() - issued >= self.config.rotate_after

    def _gone(self) -> None:
        """The stored session was logged out or expired while this request ran: it
        stays dead.  Nothing more is written, and the client's cookie is cleared."""
        self._dead = True
        self._send_cookie = False
        self._clear_cookie = True

    def _full_record(self) -> dict[str, Any]:
        record = dict(self.items())
        record.update(self._meta)
        record[CREATED_KEY] = self._created
        return record

    def _diff(self) -> tuple[dict[str, Any], list[str]]:
        changed = {}
        for key, value in self.items():
            encoded = _encode(key, value)
            if self._force_full or self._snapshot.get(key) != encoded:
                changed[key] = value
        removed = [key for key in self._snapshot if key not in self]
        for key, value in self._meta_changed.items():
            if value is None:
                removed.append(key)
            else:
                changed[key] = value
        return changed, removed

    def persist(self) -> None:
        """Write what this request changed; decide whether a cookie goes out."""
        if self.anonymous or self._dead:
            return
        changed, removed = self._diff()
        if self.is_new:
            if dict.__len__(self) or self.config.save_uninitialized:
                self._create_record()
                self.is_new = False
                self._send_cookie = True
                self._clear_cookie = False
            return
        if not dict.__len__(self) and self.config.unset == "destroy" and any(k in self._snapshot for k in removed):
            self._delete_record()
            self._clear_cookie = True
            return
        seen = self._seen_now()
        if self._due_for_rotation():
            if self.config.resave:
                changed = {**self._full_record(), **changed}
            if self._rotate({**changed, **seen}, removed):
                return  # the new cookie goes out
            if self._dead:
                return
            # Another request rotated it first (write to the ID it chose, below), or
            # the store could not rotate it now (write under the old ID, as usual).
        if self.config.resave:
            if self._write(lambda sid: self.store.replace(sid, self._full_record()) or None) is None:
                return
        elif changed or removed or seen:
            # A session logged out, regenerated or expired while this request ran
            # stays dead (re-creating it here once let a stolen cookie outlive the
            # logout); one rotated meanwhile is written where it lives now.
            def update(sid: str) -> dict[str, Any] | None:
                expected = self._loaded_record if not self._force_full else None
                return self.store.update(sid, {**changed, **seen}, removed, expected=expected)

            if self._write(update) is None:
                return
            self._relinked()
            if changed or removed:
                # express re-sends the cookie (with a fresh expiry) when the session changed
                # ("last seen" alone is the layer's bookkeeping, not a change).
                self._send_cookie = True
        if self.config.rolling:
            self._send_cookie = True

    def cookie_secure(self) -> bool:
        if self.config.secure == "auto":
            return self.request.scheme == "https"
        return self.config.secure == "true"

    def apply_cookie(self, response: Response) -> None:
        config = self.config
        if self._send_cookie and not self.is_new:
            value = self._cookie_value
            if not value or not value.startswith(self.id + "."):
                value = config.signer.sign(self.id)
            header = _set_cookie_header(config, value, config.max_age, self.cookie_secure())
        elif self._clear_cookie:
            header = _set_cookie_header(config, "", 0, self.cookie_secure())
        else:
            return
        response.headerlist.append(("Set-Cookie", header))


def _cookie_attributes(config: SessionConfig) -> str:
    """The attributes that never change, rendered once per configuration."""
    parts = [f"Path={config.path}"]
    if config.domain:
        parts.append(f"Domain={config.domain}")
    if config.httponly:
        parts.append("HttpOnly")
    parts.append(f"SameSite={config.samesite.capitalize()}")
    return "; ".join(parts)


_ATTRIBUTES: dict[SessionConfig, str] = {}
_EXPIRES: tuple[int, str] = (0, "")  # (expiry second, its HTTP date): one format per second


def _expires(max_age: int) -> str:
    global _EXPIRES
    when = int(time.time()) + max_age
    cached = _EXPIRES
    if cached[0] != when:
        cached = _EXPIRES = (when, formatdate(when, usegmt=True))
    return cached[1]


def _set_cookie_header(config: SessionConfig, value: str, max_age: int | None, secure: bool) -> str:
    # Rendered by hand: WebOb's generic cookie serializer was a tenth of the
    # request time on the session hot path. Values and attributes were all
    # validated at start-up, so nothing here needs quoting.
    attributes = _ATTRIBUTES.get(config)
    if attributes is None:
        attributes = _ATTRIBUTES[config] = _cookie_attributes(config)
    header = f"{config.name}={value}"
    if max_age is not None:
        header += f"; Max-Age={max_age}; Expires={_expires(max_age)}"
    header += "; " + attributes
    if secure:
        header += "; Secure"
    return header


def session_factory_from_values(values: SessupSettings, store: SessionStore) -> Callable[[Request], Any]:
    """A Pyramid session factory for the parsed ``sessup.*`` ``values`` over ``store``."""
    config = SessionConfig.from_values(values)
    csrf_settings = csrf.CSRFConfig.from_values(values)
    incidents = _Incidents()
    base = BeakerSessionFactoryConfig(key=config.name, timeout=config.timeout, data_serializer="json",
                                      httponly=config.httponly, session_class=SessupSession)

    @implementer(ISession)
    class SessupSessionObject(base):  # type: ignore[misc, valid-type]
        """``request.session``: created lazily, persisted by one response callback."""

        #: Changes inside a stored value (a dict changed in place) are found
        #: when the response is saved: no need to call ``changed()``.
        detects_nested_changes = True

        def __init__(self, request: Request) -> None:
            SessionObject.__init__(self, request.environ, **self._options)
            if getattr(request.registry, "sessup_csrf_config", None) is None:
                # An app configured in Python (SessupSessionFactory) has no sessup.* settings.
                request.registry.sessup_csrf_config = csrf_settings
            self.__dict__["_request"] = request
            request.add_response_callback(self._finish)

        def _session(self) -> SessupSession:
            sess = self.__dict__["_sess"]
            if sess is None:
                sess = SessupSession(self.__dict__["_request"], config, store, incidents)
                self.__dict__["_sess"] = sess
            return sess

        def _finish(self, request: Request, response: Response) -> None:
            sess = self.__dict__["_sess"]
            if sess is None:  # the request never touched the session: no work at all
                return
            vary = response.headers.get("Vary")
            if not vary:
                response.headers["Vary"] = "Cookie"
            elif "cookie" not in vary.lower():
                response.headers["Vary"] = vary + ", Cookie"
            if "Cache-Control" not in response.headers:
                # The body may depend on the session: keep it out of every cache.
                response.headers["Cache-Control"] = "no-store"
            if response.status_int >= 500:
                return  # a failed request saves nothing
            try:
                sess.persist()
            except StoreUnavailable:
                if config.on_store_error == "fail":
                    _store_down_response(request, response)
                return
            sess.apply_cookie(response)
            csrf.follow_session_cookie(request, response)

        # ISession API over the Beaker proxy, without pyramid_beaker's save-per-call.
        @property
        def new(self) -> bool:
            return self._session().is_new

        def changed(self) -> None:
            self._session().changed()

        # CSRF tokens need neither the stored session nor even its loading.
        def get_csrf_token(self) -> str:
            return csrf.get_csrf_token(self.__dict__["_request"])

        def new_csrf_token(self) -> str:
            return csrf.new_csrf_token(self.__dict__["_request"])

        def invalidate(self) -> None:
            self._session().invalidate()

        # Sessions per user (pyramid_sessup.users).
        def sign_in(self, user_id: str) -> None:
            """Bind the session to ``user_id`` (new ID, new CSRF token; stored at once)."""
            self._session().sign_in(user_id)

        def sign_out(self) -> None:
            """Unbind and invalidate: the old ID is dead, the request goes on with a new, empty session."""
            self._session().sign_out()

        @property
        def user_id(self) -> str | None:
            """The user the session is signed in as, or None."""
            return self._session().user_id

        def save(self) -> None:  # type: ignore[override]
            self._session().save()

        def delete(self) -> None:  # type: ignore[override]
            self._session().invalidate()

        def persist(self) -> None:  # type: ignore[override]
            self._session().persist()

        def __setitem__(self, key: str, value: Any) -> None:
            self._session()[key] = value

        def __delitem__(self, key: str) -> None:
            del self._session()[key]

        def clear(self) -> None:
            dict.clear(self._session())

        def update(self, *args: Any, **kw: Any) -> None:
            self._session().update(*args, **kw)

        def setdefault(self, key: str, default: Any = None) -> Any:
            return self._session().setdefault(key, default)

        def pop(self, key: str, *default: Any) -> Any:
            return self._session().pop(key, *default)

        def popitem(self) -> tuple[str, Any]:
            return self._session().popitem()

        def get(self, key: str, default: Any = None) -> Any:
            return self._session().get(key, default)

        def keys(self) -> Iterable[str]:
            return self._session().keys()

        def values(self) -> Iterable[Any]:
            return self._session().values()

        def items(self) -> Iterable[tuple[str, Any]]:
            return self._session().items()

        def __len__(self) -> int:
            return len(self._session())

        def __bool__(self) -> bool:
            return True

    return SessupSessionObject


def _store_down_response(request: Request, response: Response) -> None:
    """Turn an already-built response into the 503 the ``fail`` policy promises."""
    from .errors import fill_error

    for name in [k for k in response.headers if k.lower() == "set-cookie"]:
        del response.headers[name]
    fill_error(response, request, StoreUnavailable("Session store unavailable; try again shortly"))
