"""In-process session store: for development and tests only.

Records are kept as JSON text (not live objects), so the memory store
behaves exactly like the shared stores: what cannot survive JSON does not
survive here either.  A tombstone is an entry whose text is ``None``; the
forward of a rotated ID (:meth:`MemoryStore.rotate`) is kept beside its
tombstone, with the time it stops being followed.
Expired records, tombstones and forwards are evicted as they are met and by a
sweep every few thousand writes, so the store does not grow without bound.  The
user index is a dict ``user key -> {sid: linked_at}``, pruned of dead
sessions by the same sweep, by ``purge_expired`` and whenever a user links
a session.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, Iterable, Iterator, Mapping

from ..exceptions import SessionLockTimeout
from ..settings import SessupSettings
from .base import (
    CounterFn,
    Forward,
    SessionStore,
    dumps,
    loads,
    merge,
    valid_counter_key,
    valid_session_id,
    valid_user_key,
)

_SWEEP_EVERY = 4096  # writes between two sweeps of expired records


class MemoryStore(SessionStore):
    name = "memory"

    def __init__(self, *, timeout: int) -> None:
        super().__init__(timeout=timeout)
        # sid -> (json, or None for a tombstone; expires_at)
        self._records: dict[str, tuple[str | None, float]] = {}
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[str, float]] = {}  # sid -> (token, held until)
        self._lock_changed = threading.Condition(self._mutex)
        self._writes = 0
        self._counters: dict[str, tuple[str, float]] = {}  # key -> (json, expires_at), apart from sessions
        self._users: dict[str, dict[str, float]] = {}  # user key -> {sid: linked_at}
        self._forwards: dict[str, tuple[str, float]] = {}  # rotated sid -> (new sid, followed until)

    @classmethod
    def from_settings(cls, values: SessupSettings) -> MemoryStore:
        return cls(timeout=values.session.timeout)

    def _entry(self, sid: str, now: float) -> tuple[str | None, float] | None:
        """The unexpired entry of ``sid`` (a record or a tombstone), if any."""
        entry = self._records.get(sid)
        if entry is not None and entry[1] <= now:
            del self._records[sid]
            return None
        return entry

    def _live(self, sid: str, now: float) -> str | None:
        entry = self._entry(sid, now)
        return None if entry is None else entry[0]

    def _write(self, sid: str, data: Mapping[str, Any] | None, now: float) -> None:
        self._records[sid] = (None if data is None else dumps(data), now + self.timeout)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            for key in [k for k, (_, exp) in self._records.items() if exp <= now]:
                del self._records[key]
            for user_key in list(self._users):
                self._prune_user(user_key, now)
            for key in [k for k, (_, until) in self._forwards.items() if until <= now]:
                del self._forwards[key]

    def lookup(self, sid: str, *, touch: bool = True) -> dict[str, Any] | Forward | None:
        if not valid_session_id(sid):
            return None
        now = time.time()
        with self._mutex:
            entry = self._entry(sid, now)
            if entry is None:
                return None
            raw = entry[0]
            if raw is None:  # a tombstone: perhaps a rotated ID whose forward still lives
                forward = self._forwards.get(sid)
                return Forward(forward[0]) if forward is not None and forward[1] > now else None
            if touch:
                self._records[sid] = (raw, now + self.timeout)
        return loads(raw, sid)

    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        now = time.time()
        with self._mutex:
            if self._entry(sid, now) is not None:
                return False
            self._write(sid, data, now)
            return True

    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        now = time.time()
        with self._mutex:
            current = loads(self._live(sid, now), sid)
            if current is None:
                return None
            self._write(sid, merge(current, changed, removed), now)
            return current

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        now = time.time()
        with self._mutex:
            if self._live(sid, now) is None:
                return False
            self._write(sid, data, now)
            return True

    def move(self, old: str, new: str, data: Mapping[str, Any]) -> bool:
        if not (valid_session_id(old) and valid_session_id(new)):
            return False
        now = time.time()
        with self._mutex:
            if loads(self._live(old, now), old) is None or self._entry(new, now) is not None:
                return False
            self._write(new, data, now)
            self._write(old, None, now)
            return True

    def rotate(self, old: str, new: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               grace: float, expected: str | None = None, if_record: str | None = None) -> dict[str, Any] | None:
        if not (valid_session_id(old) and valid_session_id(new)) or old == new:
            return None
        now = time.time()
        with self._mutex:
            current = loads(self._live(old, now), old)
            if current is None or self._entry(new, now) is not None:
                return None
            if if_record is not None and current != json.loads(if_record):
                return None
            merge(current, changed, removed)
            self._write(new, current, now)
            self._write(old, None, now)
            self._forwards[old] = (new, now + grace)
            return current

    def touch(self, sid: str) -> None:
        now = time.time()
        with self._mutex:
            raw = self._live(sid, now)
            if raw is not None:
                self._records[sid] = (raw, now + self.timeout)

    def delete(self, sid: str) -> str | None:
        if not valid_session_id(sid):
            return None
        now = time.time()
        with self._mutex:
            forward = self._forwards.pop(sid, None)
            self._write(sid, None, now)
        return forward[0] if forward is not None and forward[1] > now else None

    def acquire_lock(self, sid: str, timeout: float) -> Any:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + timeout
        with self._lock_changed:
            while True:
                now = time.monotonic()
                held = self._locks.get(sid)
                if held is None or held[1] <= now:
                    # A lock lives at most timeout + session timeout: a lost holder cannot block forever.
                    self._locks[sid] = (token, now + max(timeout, 1.0) * 6)
                    return token
                if now >= deadline:
                    raise SessionLockTimeout(f"session is locked by another request (waited {timeout:g}s)")
                self._lock_changed.wait(min(deadline, held[1]) - now)

    def release_lock(self, sid: str, token: Any) -> None:
        with self._lock_changed:
            held = self._locks.get(sid)
            if held is not None and held[0] == token:
                del self._locks[sid]
                self._lock_changed.notify_all()

    def modify_counter(self, key: str, fn: CounterFn, ttl: float) -> Any:
        if not valid_counter_key(key):
            raise ValueError("not a counter key")
        with self._mutex:
            now = time.time()
            entry = self._counters.get(key)
            current = loads(entry[0], key) if entry is not None and entry[1] > now else None
            new, result = fn(current)
            if new is not None:
                self._counters[key] = (dumps(new), now + ttl)
                self._writes += 1
                if self._writes % _SWEEP_EVERY == 0:
                    for stale in [k for k, (_, exp) in self._counters.items() if exp <= now]:
                        del self._counters[stale]
            elif entry is not None and entry[1] <= now:
                del self._counters[key]
            return result

    # -- the user index ----------------------------------------------------------------------
    def _prune_user(self, user_key: str, now: float) -> None:
        """Drop the user's entries of dead sessions linked over a timeout ago (under the mutex)."""
        entries = self._users.get(user_key)
        if entries is None:
            return
        for sid, linked in list(entries.items()):
            if linked <= now - self.timeout and self._live(sid, now) is None:
                del entries[sid]
        if not entries:
            del self._users[user_key]

    def link_user(self, user_key: str, sid: str) -> None:
        if not (valid_user_key(user_key) and valid_session_id(sid)):
            return
        now = time.time()
        with self._mutex:
            self._prune_user(user_key, now)
            self._users.setdefault(user_key, {})[sid] = now

    def unlink_user(self, user_key: str, sid: str) -> None:
        with self._mutex:
            entries = self._users.get(user_key)
            if entries is not None:
                entries.pop(sid, None)
                if not entries:
                    del self._users[user_key]

    def user_sessions(self, user_key: str) -> list[tuple[str, float]]:
        with self._mutex:
            return list(self._users.get(user_key, {}).items())

    def ids(self) -> Iterator[str]:
        now = time.time()
        with self._mutex:
            live = [sid for sid, (raw, exp) in self._records.items() if exp > now and raw is not None]
        return iter(live)

    def purge_expired(self) -> int:
        now = time.time()
        with self._mutex:
            expired = [sid for sid, (_, exp) in self._records.items() if exp <= now]
            for sid in expired:
                del self._records[sid]
            for key in [k for k, (_, exp) in self._counters.items() if exp <= now]:
                del self._counters[key]
            for user_key in list(self._users):
                self._prune_user(user_key, now)
            for key in [k for k, (_, until) in self._forwards.items() if until <= now]:
                del self._forwards[key]
        return len(expired)
