"""Redis session store: one JSON string per session, expiry by native TTL.

Layout: key ``key_prefix + sid`` holds the record as a JSON string (never a
pickle); its TTL is the idle timeout, so Redis itself removes expired
sessions.  Locks live at ``key_prefix + "lock:" + sid``; that suffix is never a
valid session ID, so :meth:`RedisStore.ids` cannot mistake a lock for a session;
counters (upload quotas) at ``key_prefix + "quota:" + key``, likewise; the
forward of a rotated ID at ``key_prefix + "fwd:" + sid`` (the new ID, with a
TTL of the grace); and the user index at ``key_prefix + "user:" + user key``:
a sorted set of session IDs scored by the time each was linked, whose TTL (two
session lifetimes) is refreshed by every link, i.e. whenever a session's "last
seen" is written, so it outlives each of its sessions; linking also drops the
entries of dead sessions linked over a timeout ago.

One round trip per request where possible: ``GETEX … EX`` loads and slides
the expiry at once, ``SET … NX EX`` creates, ``EXPIRE`` touches.  ``update``
merges per key in Python, so the stored JSON keeps full fidelity (a Lua
script would have to go through cjson, which rounds numbers to 14 digits and
turns ``[]`` into ``{}``), then swaps the record with a compare-and-set
script that compares raw strings: one round trip when the request knows the
record it loaded and nobody wrote meanwhile; on a conflict it merges onto the
record the script returned and tries again.  Without a known record it falls
back to ``WATCH``/``MULTI``.

A dead ID's key holds the tombstone ``null`` with the session's TTL: ``delete``
is one ``SET … EX``, so the record and its tombstone swap atomically;
``create``'s ``NX`` refuses it, and the compare-and-set and ``replace``
scripts never write over it.  ``rotate`` is a compare-and-set script like
``update``'s that also writes the new record, the old ID's tombstone and its
forward; ``lookup`` reads the forward only when it met a tombstone, and
``delete`` takes it away (``GETDEL``) in the same transaction that writes the
tombstone.
"""
from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Iterable, Iterator, Mapping

import redis
from pyramid.exceptions import ConfigurationError
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..exceptions import SessionLockTimeout, StoreUnavailable
from ..settings import SessupSettings
from .base import (
    TOMBSTONE,
    CounterFn,
    Forward,
    SessionStore,
    dumps,
    loads,
    merge,
    required,
    valid_counter_key,
    valid_session_id,
    valid_user_key,
)

log = logging.getLogger("pyramid_sessup.stores.redis")

#: Compare-and-delete: release the lock only if we still own it (it may have
#: expired and been taken by another request meanwhile).
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

#: Compare-and-set: replace the record only if it is still what the caller
#: merged onto; otherwise return the current record (false if it is gone).
_SWAP = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
    return 1
end
return current
"""

#: Overwrite a present record, never a tombstone: 1 if written, 0 if absent or dead.
_REPLACE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[3] then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""

#: regenerate(): the new record and the old ID's tombstone, both or neither.
_MOVE = """
local current = redis.call('GET', KEYS[1])
if not current or string.sub(current, 1, 1) ~= '{' or redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[2])
return 1
"""

#: rotate(): the new record, the old ID's tombstone and its forward, if the old
#: record is still what the caller merged onto (else the current record, or 0
#: if the new ID is taken).
_ROTATE = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
    return current
end
if redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('SET', KEYS[1], 'null', 'EX', ARGV[3])
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
return 1
"""

_DEAD = TOMBSTONE.encode("ascii")

#: Optimistic merges retried this often before giving up; each retry means
#: another writer committed in between, so this is only reached under a
#: pathological write storm on a single session.
_MAX_UPDATE_ATTEMPTS = 100


def _session_id(raw: bytes | str | None) -> str | None:
    """A stored forward's target, if it is a session ID."""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    return text if text is not None and valid_session_id(text) else None


def _glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so a key prefix matches literally in SCAN."""
    return "".join("\\" + ch if ch in "*?[]\\^" else ch for ch in text)


class RedisStore(SessionStore):
    """Sessions in Redis, selected by ``sessup.session.store = redis``."""

    name = "redis"
    compare_and_set = True

    def __init__(
        self,
        url: str,
        *,
        timeout: int,
        key_prefix: str = "sessup:",
        pool_size: int = 20,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        lock_ttl: float = 60.0,
    ) -> None:
        super().__init__(timeout=timeout)
        self.url = url
        self.key_prefix = key_prefix
        #: Lifetime of a session lock: a crashed holder blocks others at most this long.
        self.lock_ttl_ms = max(1, int(lock_ttl * 1000))
        # A blocking pool: when all pool_size connections are busy, a request waits
        # (bounded) for one instead of failing with "Too many connections".
        # One immediate retry on a connection error heals a pooled connection that
        # the server closed (restart, idle timeout); redis-py's default of ten
        # retries with back-off would turn "store down" into a multi-second hang.
        try:
            self.pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=pool_size,
                timeout=connect_timeout + socket_timeout,
                socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
        except ValueError as exc:
            raise ConfigurationError(f"sessup.session.url is not a valid Redis URL: {exc}") from None
        self.client = redis.Redis(connection_pool=self.pool)
        self._release_script = self.client.register_script(_RELEASE_LOCK)
        self._swap_script = self.client.register_script(_SWAP)
        self._replace_script = self.client.register_script(_REPLACE)
        self._move_script = self.client.register_script(_MOVE)
        self._rotate_script = self.client.register_script(_ROTATE)

    @classmethod
    def from_settings(cls, values: SessupSettings) -> RedisStore:
        """Build the store from parsed settings (keys without the ``sessup.`` prefix)."""
        return cls(
            required(values.session.url, "sessup.session.url"),
            timeout=values.session.timeout,
            key_prefix=values.session.key_prefix or "",
            pool_size=values.session.pool_size,
            connect_timeout=values.session.connect_timeout,
            socket_timeout=values.session.socket_timeout,
            # Outlive any reasonable request, and the waiters' patience.
            lock_ttl=max(60.0, 3 * values.session.lock_timeout),
        )

    # -- helpers ---------------------------------------------------------------------
    def _key(self, sid: str) -> str:
        return self.key_prefix + sid

    def _lock_key(self, sid: str) -> str:
        return self.key_prefix + "lock:" + sid

    def _index_key(self, user_key: str) -> str:
        return self.key_prefix + "user:" + user_key
    def _forward_key(self, sid: str) -> str:
        return self.key_prefix + "fwd:" + sid

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        # Kept short: the text may reach a 503 page; addresses stay out of it.
        log.debug("redis error: %s", exc)
        return StoreUnavailable(f"Redis session store unavailable ({type(exc).__name__})")

    # -- per-request operations --------------------------------------------------------
    def lookup(self, sid: str, *, touch: bool = True) -> dict[str, Any] | Forward | None:
        if not valid_session_id(sid):
            return None
        try:
            if touch:
                raw = self.client.getex(self._key(sid), ex=self.timeout)
            else:
                raw = self.client.get(self._key(sid))
            if raw == _DEAD:
                # Only a tombstone can carry a forward: one more round trip, and only here.
                target = _session_id(self.client.get(self._forward_key(sid)))
                return Forward(target) if target is not None else None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:
            # WRONGTYPE: something other than a string sits at the key.
            raw = b"\x00not a string"
        return loads(raw, sid)

    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        try:
            return bool(self.client.set(self._key(sid), dumps(data), nx=True, ex=self.timeout))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        if not valid_session_id(sid):
            return None
        key = self._key(sid)
        removed = list(removed)
        if expected is not None:
            return self._swap(sid, key, changed, removed, expected)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for _ in range(_MAX_UPDATE_ATTEMPTS):
                    try:
                        pipe.watch(key)
                        try:
                            raw = pipe.get(key)
                        except ResponseError:
                            raw = b"\x00not a string"
                        data = None if raw == _DEAD else loads(raw, sid)
                        if data is None:
                            pipe.unwatch()
                            return None
                        merge(data, changed, removed)
                        pipe.multi()
                        pipe.set(key, dumps(data), ex=self.timeout)
                        pipe.execute()
                        return data
                    except WatchError:
                        # Another request wrote this session between our GET and
                        # EXEC: re-read and merge onto its version.
                        continue
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        raise StoreUnavailable(f"session {sid[:8]}…: update kept conflicting after {_MAX_UPDATE_ATTEMPTS} attempts")

    def _swap(self, sid: str, key: str, changed: Mapping[str, Any], removed: list[str],
              expected: str) -> dict[str, Any] | None:
        base: str | bytes = expected
        for _ in range(_MAX_UPDATE_ATTEMPTS):
            data = loads(base, sid)
            if data is None:
                return None
            merge(data, changed, removed)
            try:
                result = self._swap_script(keys=[key], args=[base, dumps(data), self.timeout])
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise self._unavailable(exc) from exc
            except ResponseError:  # not a string at the key: treat as corrupt, like load()
                return None
            if result == 1:
                return data
            if not result or result == _DEAD:
                return None  # deleted, replaced or expired meanwhile
            base = result  # another request wrote first: merge onto its record
        raise StoreUnavailable(f"session {sid[:8]}…: update kept conflicting after {_MAX_UPDATE_ATTEMPTS} attempts")

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        try:
            return self._replace_script(keys=[self._key(sid)], args=[dumps(data), self.timeout, _DEAD]) == 1
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:  # not a string at the key: nothing to overwrite
            return False

    def move(self, old: str, new: str, data: Mapping[str, Any]) -> bool:
        if not (valid_session_id(old) and valid_session_id(new)):
            return False
        try:
            return self._move_script(keys=[self._key(old), self._key(new)],
                                     args=[dumps(data), self.timeout, _DEAD]) == 1
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:  # not a string at the old key: not a live session
            return False

    def rotate(self, old: str, new: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               grace: float, expected: str | None = None, if_record: str | None = None) -> dict[str, Any] | None:
        if not (valid_session_id(old) and valid_session_id(new)) or old == new:
            return None
        removed = list(removed)
        keys = [self._key(old), self._key(new), self._forward_key(old)]
        grace_ms = max(1, int(grace * 1000))
        try:
            if if_record is not None:
                expected = if_record
            base: str | bytes | None = expected if expected is not None else self.client.get(keys[0])
            for _ in range(_MAX_UPDATE_ATTEMPTS):
                if base is None or base == _DEAD or base == TOMBSTONE:
                    return None
                data = loads(base, old)
                if data is None:
                    return None
                merge(data, changed, removed)
                result = self._rotate_script(keys=keys, args=[base, dumps(data), self.timeout, new, grace_ms])
                if result == 1:
                    return data
                if not isinstance(result, bytes) or if_record is not None:
                    return None  # gone meanwhile (nil), the new ID is taken (0), or not the record required
                base = result  # another request wrote first: merge onto its record
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:  # not a string at the old key: not a live session
            return None
        raise StoreUnavailable(f"session {old[:8]}…: rotation kept conflicting after {_MAX_UPDATE_ATTEMPTS} attempts")

    def touch(self, sid: str) -> None:
        if not valid_session_id(sid):
            return
        try:
            self.client.expire(self._key(sid), self.timeout)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def delete(self, sid: str) -> str | None:
        if not valid_session_id(sid):
            return None
        try:
            # One transaction: the record becomes its tombstone, with a fresh TTL,
            # and the forward it may carry is taken away and reported.
            with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(sid), _DEAD, ex=self.timeout)
                pipe.getdel(self._forward_key(sid))
                _, target = pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return _session_id(target)

    # -- locking -------------------------------------------------------------------------
    def acquire_lock(self, sid: str, timeout: float) -> str:
        token = secrets.token_hex(16)
        key = self._lock_key(sid)
        deadline = time.monotonic() + timeout
        pause = 0.002
        try:
            while True:
                if self.client.set(key, token, nx=True, px=self.lock_ttl_ms):
                    return token
                if time.monotonic() >= deadline:
                    break
                # Short, growing pauses: a lock is usually held for one request's duration.
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.05)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        raise SessionLockTimeout(f"session lock not acquired within {timeout:g}s")

    def release_lock(self, sid: str, token: Any) -> None:
        try:
            self._release_script(keys=[self._lock_key(sid)], args=[token])
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc

    # -- the user index --------------------------------------------------------------------
    def link_user(self, user_key: str, sid: str) -> None:
        if not (valid_user_key(user_key) and valid_session_id(sid)):
            return
        key = self._index_key(user_key)
        now = time.time()
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.zadd(key, {sid: now})
                pipe.expire(key, self.index_ttl)
                pipe.zrangebyscore(key, "-inf", now - self.timeout)
                stale = pipe.execute()[2]
            self._prune_index(key, stale)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:  # not a sorted set at the key: nothing of ours to keep
            log.warning("user index %s… is not a sorted set; left alone", user_key[:8])

    def _prune_index(self, key: str, stale: list[Any]) -> None:
        """Remove from the index ``key`` those of ``stale`` (entries linked over a
        timeout ago, so no sign-in is still about to write their records) whose
        record is absent or dead."""
        if not stale:
            return
        values = self.client.mget([self._key(m.decode("ascii", "replace")) for m in stale])
        dead = [m for m, value in zip(stale, values) if value is None or value == _DEAD]
        if dead:
            self.client.zrem(key, *dead)

    def unlink_user(self, user_key: str, sid: str) -> None:
        if not valid_user_key(user_key):
            return
        try:
            self.client.zrem(self._index_key(user_key), sid)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:
            pass

    def user_sessions(self, user_key: str) -> list[tuple[str, float]]:
        if not valid_user_key(user_key):
            return []
        try:
            entries: list[Any] = self.client.zrange(self._index_key(user_key), 0, -1, withscores=True)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        except ResponseError:
            return []
        return [(member.decode("ascii", "replace"), float(score)) for member, score in entries]

    # -- operations ------------------------------------------------------------------------
    def modify_counter(self, key: str, fn: CounterFn, ttl: float) -> Any:
        if not valid_counter_key(key):
            raise ValueError("not a counter key")
        name = self.key_prefix + "quota:" + key
        ttl_ms = max(1, int(ttl * 1000))
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for _ in range(_MAX_UPDATE_ATTEMPTS):
                    try:
                        pipe.watch(name)
                        try:
                            raw = pipe.get(name)
                        except ResponseError:
                            raw = None
                        new, result = fn(loads(raw, key) if raw is not None else None)
                        if new is None:
                            pipe.unwatch()
                            return result
                        pipe.multi()
                        pipe.set(name, dumps(new), px=ttl_ms)
                        pipe.execute()
                        return result
                    except WatchError:
                        continue  # another process changed it between GET and EXEC: redo on its value
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        raise StoreUnavailable(f"counter {key[:8]}…: kept conflicting after {_MAX_UPDATE_ATTEMPTS} attempts")

    def ids(self) -> Iterator[str]:
        start = len(self.key_prefix)
        try:
            batch: list[str] = []
            for key in self.client.scan_iter(match=_glob_escape(self.key_prefix) + "*", count=1000):
                sid = key.decode("utf-8", "replace")[start:]
                if valid_session_id(sid):
                    batch.append(sid)
                if len(batch) >= 500:
                    yield from self._not_dead(batch)
                    batch = []
            yield from self._not_dead(batch)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc

    def _not_dead(self, sids: list[str]) -> list[str]:
        """``sids`` without the tombstones (and the keys gone since the scan, or
        not strings: MGET answers nil for those)."""
        if not sids:
            return []
        values = self.client.mget([self._key(sid) for sid in sids])
        return [sid for sid, value in zip(sids, values) if value != _DEAD and value is not None]

    def purge_expired(self) -> int:
        # Redis deletes expired keys itself (every record is written with a TTL),
        # and an expired key is invisible even before its memory is reclaimed.
        # A user index expires by itself too (index_ttl), and each link prunes
        # it; this prunes the indexes of users who were not linked again.
        horizon = time.time() - self.timeout
        try:
            for key in self.client.scan_iter(match=_glob_escape(self.key_prefix + "user:") + "*", count=1000):
                try:
                    stale: list[Any] = self.client.zrangebyscore(key, "-inf", horizon)
                    self._prune_index(key, stale)
                except ResponseError:
                    continue  # not a sorted set: not ours
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from exc
        return 0

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless Redis answers."""
        try:
            self.client.ping()
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self.pool.disconnect()
