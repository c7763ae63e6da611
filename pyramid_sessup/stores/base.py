"""The contract every session store fulfils.

A store keeps one record per session ID: a JSON object of the session's keys,
plus an expiry ``timeout`` seconds after the last access.  The session layer
(:mod:`pyramid_sessup.session`) talks only to this interface, so every
semantic it promises holds for every store:

* ``load`` returns ``None`` for an absent, expired, dead or corrupt record (it
  never raises for bad stored bytes, and never unpickles anything);
* ``update`` merges per key under the store's own atomicity (file lock, Redis
  WATCH/MULTI or script, PostgreSQL row lock), so two requests that write
  different keys of one session both persist;
* ``touch`` slides the expiry without rewriting the data;
* a dead ID stays dead: ``delete`` and ``move`` leave a *tombstone* (the record
  ``null``, :data:`TOMBSTONE`) that lives ``timeout`` seconds, written in the
  same atomic step as the delete.  No write brings a tombstoned, expired or
  absent record back: ``update`` and ``replace`` then change nothing and say
  so, and ``create`` refuses a tombstoned ID.  A request still running on a
  session that was logged out meanwhile thus writes nothing;
* ``ids``, ``count`` and ``sessup-sessions`` see live records only;
  ``purge_expired`` removes expired tombstones too;
* a store that cannot be reached raises :class:`StoreUnavailable`.

Besides records, a store keeps a *user index* (:mod:`pyramid_sessup.users`):
for each opaque ``user_key`` (an HMAC of a user ID: the store never sees the
ID itself), the IDs of the sessions signed in as that user, each with the
time it was last linked.  The index is a hint, never the truth: the caller
loads each record (without touching it) and lists only the live ones bound
to that user.  So an entry may outlive its session for a while, but never
the reverse: the session layer links an entry *before* the record exists
under its ID (sign-in, regenerate) and unlinks it only *after* the record
died.  Every store prunes entries of dead sessions that were linked more
than ``timeout`` seconds ago (so an entry linked for a record about to be
written is never taken for a dead one), in ``purge_expired`` and as it goes;
the index of a user thus never grows beyond the sessions of one session
lifetime.
ID rotation (``sessup.session.rotate_after``) gives a session a new ID without
losing a concurrent request's write and without ever making two live records
of one session.  :meth:`SessionStore.rotate` does it in one atomic step: the
record (with the caller's changes merged in) moves to the new ID, and the old
ID becomes a tombstone *carrying a forward* to the new ID for ``grace``
seconds.  Every check that treats a tombstone as dead treats it as dead (no
write lands on it, ``create`` refuses it, ``ids`` skips it); only
:meth:`SessionStore.lookup` reads the forward, answering :class:`Forward` so
that the session layer loads the new ID instead: requests still carrying the
old cookie during the grace are served the same session, and a write that
finds the old ID dead looks it up and lands on the new ID.  After the grace
the old ID is an ordinary tombstone: a stolen old cookie revives nothing.  A
forward never leads past a dead record: a session logged out or regenerated
during the grace kills its current ID, so following the forward finds a
tombstone; :meth:`SessionStore.delete` reports the forward it overwrote, so
deleting an old ID deletes the session it leads to (:meth:`SessionStore.kill`).
Only one of two racing rotations wins (the move is atomic); the loser finds
the forward.  The forward's clock is the store's: the database's for
PostgreSQL, Redis's TTL for Redis, the process's for the memory and file stores
(one machine).

Besides sessions, a store keeps *counters* (upload quotas,
:mod:`pyramid_sessup.uploads.quota`) in a namespace of their own that no
session ID can reach: :meth:`SessionStore.modify_counter` changes one
atomically across every process that shares the store, and never creates or
touches a session record.
"""
from __future__ import annotations

import abc
import json
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

from pyramid.exceptions import ConfigurationError

from ..exceptions import StoreUnavailable

if TYPE_CHECKING:
    from ..settings import SessupSettings

log = logging.getLogger("pyramid_sessup.stores")

#: Session IDs are ``secrets.token_urlsafe(32)``: 43 URL-safe characters (256 bits).
#: Anything else is refused before a store or the filesystem ever sees it.
SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{43}\Z")

#: Counter keys: lower-case hex digests (the quota module hashes what it counts).
COUNTER_KEY_RE = re.compile(r"[0-9a-f]{16,64}\Z")

#: User keys of the user index: a lower-case hex HMAC-SHA256 of the user ID.
USER_KEY_RE = re.compile(r"[0-9a-f]{64}\Z")

T = TypeVar("T")

#: ``modify_counter``'s function: current data (``None`` if absent or expired)
#: -> (data to store, or ``None`` to leave the counter as it is; a result).
CounterFn = Callable[["dict[str, Any] | None"], "tuple[dict[str, Any] | None, Any]"]


def valid_counter_key(key: str) -> bool:
    """True if ``key`` has the shape of a counter key."""
    return isinstance(key, str) and COUNTER_KEY_RE.match(key) is not None


def valid_user_key(key: str) -> bool:
    """True if ``key`` has the shape of a user key (see :data:`USER_KEY_RE`)."""
    return isinstance(key, str) and USER_KEY_RE.match(key) is not None


#: The stored form of a dead ID.  A record is always a JSON object, so the JSON
#: ``null`` can never be mistaken for one.
TOMBSTONE = "null"


#: Forwards followed in a row before giving up (a forward lives less than the
#: rotation interval, so a chain of more than two means a broken store).
MAX_FORWARDS = 4


@dataclass(frozen=True)
class Forward:
    """:meth:`SessionStore.lookup`'s answer for an ID rotated less than ``grace``
    seconds ago: the session now lives under ``target``."""

    target: str


def valid_session_id(sid: str) -> bool:
    """True if ``sid`` has the exact shape of a session ID this library generates."""
    return isinstance(sid, str) and SESSION_ID_RE.match(sid) is not None


def dumps(data: Mapping[str, Any]) -> str:
    """Serialize a session record; compact, and the same keys always in the same order."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, allow_nan=False)


def loads(raw: str | bytes | None, sid: str = "?") -> dict[str, Any] | None:
    """Decode a stored record; ``None`` (and one log line) if it is not a JSON object.

    This is the only decoder any store uses: there is no pickle fallback, so a
    payload planted in the store is data, never code.
    """
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        log.warning("corrupt session record %s…: not a JSON object; treating it as absent", sid[:8])
        return None
    return data


def required(value: str | None, key: str) -> str:
    """A setting the store cannot work without (parse_settings already checks it)."""
    if not value:
        raise ConfigurationError(f"{key} is required by this session store")
    return value


def merge(data: dict[str, Any], changed: Mapping[str, Any], removed: Iterable[str]) -> dict[str, Any]:
    """The per-key merge every store applies: set ``changed``, drop ``removed``."""
    data.update(changed)
    for key in removed:
        data.pop(key, None)
    return data


class SessionStore(abc.ABC):
    """Abstract session store.  ``timeout`` is the idle lifetime in seconds."""

    #: Name used in ``sessup.session.store``.
    name: str = "abstract"

    #: Whether :meth:`update` uses ``expected``; the session layer serializes
    #: the loaded record for it only when this is true.
    compare_and_set: bool = False

    def __init__(self, *, timeout: int) -> None:
        self.timeout = timeout

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, values: SessupSettings) -> SessionStore:
        """The store the parsed settings describe (what :func:`~pyramid_sessup.stores.make_store` calls)."""

    # -- per-request operations (one round trip each) ---------------------------------
    def load(self, sid: str, *, touch: bool = True) -> dict[str, Any] | None:
        """Return the record's data, or ``None`` if absent, expired, dead or corrupt.

        With ``touch``, a live record's expiry slides to now + timeout in the same
        round trip (a store may slide a tombstone's too: it only stays dead longer).
        A rotated ID is dead here, forward or not (see :meth:`lookup`).
        """
        found = self.lookup(sid, touch=touch)
        return found if isinstance(found, dict) else None

    @abc.abstractmethod
    def lookup(self, sid: str, *, touch: bool = True) -> dict[str, Any] | Forward | None:
        """:meth:`load`, except that an ID whose forward still lives answers
        :class:`Forward` (the ID its session was rotated to).

        The forward is read only when the ID holds a tombstone: a live, absent or
        expired ID costs what :meth:`load` costs.
        """

    @abc.abstractmethod
    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Store a new record; ``False`` (and nothing written) if ``sid`` holds a
        live record or a tombstone."""

    @abc.abstractmethod
    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        """Atomically merge ``changed`` keys and drop ``removed`` keys; slide the expiry.

        ``expected`` is the record as this request loaded it (:func:`dumps` form).
        A store may use it to merge without re-reading and swap the record in
        one round trip when nobody wrote meanwhile (compare-and-set); any other
        store ignores it.  The result is the same either way.

        Returns the merged data, or ``None`` with nothing written if the record
        is absent, expired, dead or corrupt (it may have been deleted or expired
        while the caller's request ran: that session is over).
        """

    @abc.abstractmethod
    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        """Overwrite a present record (even a corrupt one) with ``data`` and slide
        the expiry; ``False`` with nothing written if it is absent, expired or dead."""

    @abc.abstractmethod
    def move(self, old: str, new: str, data: Mapping[str, Any]) -> bool:
        """Atomically store ``data`` as the new record ``new`` and turn ``old`` into a
        tombstone, if ``old`` holds a live, readable record and ``new`` is free.

        ``False``, with nothing changed, otherwise: ``old`` was logged out or
        expired meanwhile (``new`` is a fresh 256-bit ID, never taken in practice).
        """

    @abc.abstractmethod
    def rotate(self, old: str, new: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               grace: float, expected: str | None = None, if_record: str | None = None) -> dict[str, Any] | None:
        """Atomically move the live record ``old`` to the free ID ``new``, merging
        ``changed`` and dropping ``removed`` on the way (as :meth:`update`), and
        turn ``old`` into a tombstone that forwards to ``new`` for ``grace``
        seconds (see the module docstring; ``grace`` < ``timeout``).

        The record moved is the one stored at that moment, not the caller's copy,
        so a concurrent request's committed write moves with it.  ``expected``
        is as for :meth:`update`.  With ``if_record`` (:func:`dumps` form) the
        rotation happens only if the stored record is exactly that one: a
        wrapper that must rewrite every value for the new ID (encryption binds
        each value to its session) rotates what it read, or nothing.  Returns
        the new record, or ``None`` with nothing changed if ``old`` is not a
        live, readable record (expired, deleted, or rotated by another request
        first: :meth:`lookup` tells), is not ``if_record``, or ``new`` is taken.
        """

    @abc.abstractmethod
    def touch(self, sid: str) -> None:
        """Slide a live record's expiry to now + timeout without rewriting the data."""

    @abc.abstractmethod
    def delete(self, sid: str) -> str | None:
        """Replace the record with a tombstone that lives ``timeout`` seconds, in one
        atomic step; an absent ID gets a tombstone too.

        Returns the ID a live forward at ``sid`` led to (``sid`` had been rotated:
        its session lives on there, see :meth:`kill`), else ``None``.
        """

    def kill(self, sid: str) -> None:
        """End the session of ``sid``: delete ``sid`` and, if it had been rotated,
        the ID its forward led to (and so on)."""
        target: str | None = sid
        for _ in range(MAX_FORWARDS + 1):
            if target is None:
                return
            target = self.delete(target)

    # -- locking (sessup.session.lock) -------------------------------------------------
    @abc.abstractmethod
    def acquire_lock(self, sid: str, timeout: float) -> Any:
        """Take the session's exclusive lock, waiting at most ``timeout`` seconds.

        Returns a token for :meth:`release_lock`; raises
        :class:`~pyramid_sessup.exceptions.SessionLockTimeout` when the wait expires.
        A lock is itself bounded in time (a crashed holder cannot block forever).
        """

    @abc.abstractmethod
    def release_lock(self, sid: str, token: Any) -> None:
        """Release a lock taken by :meth:`acquire_lock` (a no-op if it already expired)."""

    @contextmanager
    def locked(self, sid: str, timeout: float) -> Iterator[None]:
        token = self.acquire_lock(sid, timeout)
        try:
            yield
        finally:
            self.release_lock(sid, token)

    # -- counters (upload quotas) ---------------------------------------------------------
    @abc.abstractmethod
    def modify_counter(self, key: str, fn: CounterFn, ttl: float) -> Any:
        """Atomically read-modify-write the counter ``key`` (see :data:`COUNTER_KEY_RE`).

        ``fn(data)`` gets the counter's JSON object (``None`` when absent or
        expired) and returns ``(new_data, result)``; ``new_data`` (unless
        ``None``) is stored to expire ``ttl`` seconds from now, and ``result``
        is returned.  No other call for the same key, in any process sharing
        the store, runs between the read and the write.  ``fn`` may run more
        than once (optimistic stores retry on a conflict), so it must not have
        side effects.  Counters live apart from sessions: they are never
        listed, counted or loaded as a session.
        """

    # -- the user index (pyramid_sessup.users) --------------------------------------------
    @property
    def index_ttl(self) -> int:
        """How long a user's index lives after its last :meth:`link_user` (stores
        that expire it, Redis and PostgreSQL): two session lifetimes.  The
        session layer re-links every signed-in session at least once per
        ``timeout`` while it is used, so the index outlives each of them."""
        return 2 * self.timeout

    @abc.abstractmethod
    def link_user(self, user_key: str, sid: str) -> None:
        """Add ``sid`` to the index of ``user_key``, or refresh the time it was linked.

        Called before the record exists under ``sid`` (sign-in) and whenever
        the session's "last seen" is written.  A store may prune the user's
        stale entries here (linked more than ``timeout`` ago, record dead).
        An invalid key or ID is ignored.
        """

    @abc.abstractmethod
    def unlink_user(self, user_key: str, sid: str) -> None:
        """Remove ``sid`` from the index of ``user_key`` (a no-op if it is not there)."""

    @abc.abstractmethod
    def user_sessions(self, user_key: str) -> list[tuple[str, float]]:
        """``(sid, linked_at)`` for each entry of the index of ``user_key``, in no
        particular order (``linked_at``: seconds since the epoch).  Entries of
        dead sessions may be among them: the caller loads each record."""

    # -- operations (sessup-sessions) ---------------------------------------------------
    @abc.abstractmethod
    def ids(self) -> Iterator[str]:
        """Iterate over the IDs of the stored, unexpired sessions (never a tombstone)."""

    def count(self) -> int:
        return sum(1 for _ in self.ids())

    @abc.abstractmethod
    def purge_expired(self) -> int:
        """Delete every expired record and tombstone, and the user index entries of
        dead sessions linked more than ``timeout`` ago; return how many records
        (and tombstones) were deleted."""

    def close(self) -> None:
        """Release connections and other resources."""


__all__ = [
    "Forward",
    "MAX_FORWARDS",
    "SessionStore",
    "StoreUnavailable",
    "SESSION_ID_RE",
    "TOMBSTONE",
    "valid_session_id",
    "valid_counter_key",
    "valid_user_key",
    "dumps",
    "loads",
    "merge",
]
