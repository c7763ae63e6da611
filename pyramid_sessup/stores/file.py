"""File session store: one JSON file per session, for one machine.

Layout under ``sessup.session.file.path`` (folders are created on demand, so
deleting them while the application runs only deletes sessions)::

    ab/abXXXX…XXXX.json   the record, or the tombstone ``null`` of a dead ID
    ab/abXXXX…XXXX.lock   the session lock of ``sessup.session.lock`` (flock)
    .quota/<key>.json     counters (upload quotas), each flock()ed while it changes;
                          the file's modification time is its expiry
    .users/<key>.json     the user index: ``{sid: linked_at}`` of one user key,
                          flock()ed while it changes; removed once empty

The user index files are pruned of dead sessions (linked over a timeout ago,
record expired, dead or absent) whenever a session is linked, by listing
(:mod:`pyramid_sessup.users`) and by ``purge_expired``.

The file's modification time is the last access: a read-only request only
``utime``s the file (touch without rewrite), and a record (or tombstone) whose
mtime is older than the timeout is expired.

The record file is its own lock: readers hold ``flock`` shared on it, writers
exclusive, so two processes writing different keys of one session both
persist and a reader never sees a half-written record.  There is no separate
lock file that could be deleted from under a writer.  A file enters its path
complete (written under a temporary name, then ``link``ed, which never
replaces a file) and leaves it only by ``unlink`` under its own exclusive lock,
once expired; a lock holder whose file still has a link (``st_nlink``) thus
holds the lock of the file at the path, and one that finds it unlinked opens
the path again.  A dead ID's file is overwritten with the tombstone in place,
under that same lock.  A rotated ID's tombstone carries its forward after the
``null``: ``null <new ID> <until>`` (``until`` in seconds since the epoch, this
machine's clock); everything that tests for a tombstone reads only the first
four bytes, so the forward changes nothing for them.

An existing record is overwritten in place, padded with spaces (JSON ignores
them) so the file never shrinks.  Replacing or truncating a file frees its
blocks, which on this kind of filesystem (ext4, ``discard``) cost about a
millisecond of kernel time per write; overwriting costs a few microseconds.
The price: a power cut in the middle of a write can leave one session
unreadable, and it then counts as corrupt (a new, empty session), never as
someone else's data.
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

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

T = TypeVar("T")

_POLL = 0.005  # seconds between two tries of a held session lock
_DEAD = TOMBSTONE.encode("ascii")
_READ_ONLY = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_WRITE = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
_ATTEMPTS = 100  # a file replaced under us this often in a row is not a race but a fault


def _read_all(fd: int, size: int) -> bytes:
    """The whole file from offset 0; one read for the usual small record."""
    wanted = size + 4096
    data = os.pread(fd, wanted, 0)
    if len(data) < wanted:  # a short read of a regular file is its end
        return data
    chunks, offset = [data], len(data)
    while True:
        chunk = os.pread(fd, 65536, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def _overwrite(fd: int, payload: bytes, size: int) -> None:
    """Write ``payload`` over the file from offset 0, padded with spaces to its
    old ``size`` so that no block is freed (see the module docstring)."""
    if len(payload) < size:
        payload += b" " * (size - len(payload))
    view = memoryview(payload)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


def _dead(raw: bytes) -> bool:
    # A record always starts with "{"; the tombstone is "null", padded.
    return raw[:4] == _DEAD


def _forward_payload(target: str, until: float) -> bytes:
    return b"%s %s %r" % (_DEAD, target.encode("ascii"), until)


def _forward_of(raw: bytes, now: float) -> str | None:
    """The target of the forward a tombstone carries, while it lives."""
    parts = raw[len(_DEAD):].split()
    if len(parts) != 2:
        return None
    target = parts[0].decode("ascii", "replace")
    try:
        until = float(parts[1])
    except ValueError:
        return None
    return target if until > now and valid_session_id(target) else None


def _unavailable(exc: OSError) -> StoreUnavailable:
    return StoreUnavailable(f"file store: {exc.strerror or exc}")


class _HeldLock:
    """A held session lock: its descriptor, closed exactly once."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:  # a second release must not close a reused descriptor
            os.close(fd)


class FileStore(SessionStore):
    name = "file"

    def __init__(self, path: str, *, timeout: int) -> None:
        super().__init__(timeout=timeout)
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._counter_dir = os.path.join(path, ".quota")
        self._user_dir = os.path.join(path, ".users")

    @classmethod
    def from_settings(cls, values: SessupSettings) -> FileStore:
        return cls(required(values.session.file_path, "sessup.session.file.path"), timeout=values.session.timeout)

    # -- the record file and its lock ----------------------------------------------------
    def _record_path(self, sid: str) -> str:
        # The ID was validated: 43 URL-safe characters, no dots or slashes.
        return os.path.join(self.path, sid[:2], sid + ".json")

    def _expired(self, st: os.stat_result, now: float) -> bool:
        return now - st.st_mtime > self.timeout

    def _with_record(self, path: str, exclusive: bool,
                     fn: Callable[[int, os.stat_result], T]) -> T | None:
        """``fn(fd, stat)`` under the record file's lock; ``None`` if there is no file.

        A file unlinked while we waited for its lock is no longer the record:
        open the path again.
        """
        flags = _READ_WRITE if exclusive else _READ_ONLY
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _unavailable(exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                st = os.fstat(fd)
                if st.st_nlink:
                    return fn(fd, st)
            except OSError as exc:
                raise _unavailable(exc) from None
            finally:
                os.close(fd)  # also releases the lock
        raise StoreUnavailable("file store: a record file kept disappearing")

    def _unlink_expired(self, path: str, st: os.stat_result) -> bool:
        """Unlink the expired file we hold exclusively, if the path still names it."""
        try:
            if os.stat(path, follow_symlinks=False).st_ino != st.st_ino:
                return False
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False

    def _remove_expired(self, path: str) -> bool | None:
        """Remove the file at ``path`` if it expired: True if removed, False if it is
        live (a record or tombstone), None if there was none to remove."""
        def check(fd: int, st: os.stat_result) -> bool | None:
            if not self._expired(st, time.time()):
                return False
            return True if self._unlink_expired(path, st) else None

        return self._with_record(path, True, check)

    def _link_new(self, sid: str, payload: bytes) -> bool:
        """Put a complete file with ``payload`` at the record's path, never over an
        existing file: an expired one is removed first; False if a live one is there."""
        path = self._record_path(sid)
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f".{sid}.{secrets.token_hex(6)}.tmp")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                os.makedirs(directory, mode=0o700, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, payload)
            finally:
                os.close(fd)
            for _ in range(_ATTEMPTS):
                try:
                    os.link(tmp, path)
                    return True
                except FileExistsError:
                    pass
                if self._remove_expired(path) is False:
                    return False
            raise StoreUnavailable("file store: a record file kept reappearing")
        except OSError as exc:
            raise _unavailable(exc) from None
        finally:
            self._unlink(tmp)

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _unavailable(exc) from None

    # -- the contract -------------------------------------------------------------------
    def lookup(self, sid: str, *, touch: bool = True) -> dict[str, Any] | Forward | None:
        if not valid_session_id(sid):
            return None
        path = self._record_path(sid)

        def read(fd: int, st: os.stat_result) -> bytes | Forward | bool:
            now = time.time()
            if self._expired(st, now):
                return False
            raw = _read_all(fd, st.st_size)
            if _dead(raw):
                target = _forward_of(raw, now)
                return True if target is None else Forward(target)
            if touch:
                os.utime(fd)
            return raw

        raw = self._with_record(path, False, read)
        if raw is False:
            self._remove_expired(path)  # under its exclusive lock, re-checked there
        if isinstance(raw, Forward):
            return raw
        if not isinstance(raw, bytes):  # absent, expired or dead
            return None
        return loads(raw.decode("utf-8", "replace"), sid)

    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        return self._link_new(sid, dumps(data).encode("utf-8"))

    def _rewrite(self, sid: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Replace a live, readable record by ``fn(record)`` under its exclusive lock."""
        path = self._record_path(sid)

        def rewrite(fd: int, st: os.stat_result) -> dict[str, Any] | None:
            if self._expired(st, time.time()):
                self._unlink_expired(path, st)
                return None
            raw = _read_all(fd, st.st_size)
            current = None if _dead(raw) else loads(raw, sid)
            if current is None:
                return None
            result = fn(current)
            _overwrite(fd, dumps(result).encode("utf-8"), st.st_size)
            return result

        return self._with_record(path, True, rewrite)

    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        if not valid_session_id(sid):
            return None
        return self._rewrite(sid, lambda current: merge(current, changed, removed))

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        path = self._record_path(sid)
        payload = dumps(data).encode("utf-8")

        def overwrite(fd: int, st: os.stat_result) -> bool:
            if self._expired(st, time.time()):
                self._unlink_expired(path, st)
                return False
            if _dead(os.pread(fd, len(_DEAD), 0)):
                return False
            _overwrite(fd, payload, st.st_size)
            return True

        return bool(self._with_record(path, True, overwrite))

    def move(self, old: str, new: str, data: Mapping[str, Any]) -> bool:
        if not (valid_session_id(old) and valid_session_id(new)) or old == new:
            return False
        path = self._record_path(old)
        payload = dumps(data).encode("utf-8")

        def move(fd: int, st: os.stat_result) -> bool:
            # Under the old record's exclusive lock: nobody writes it meanwhile.
            if self._expired(st, time.time()):
                return False
            raw = _read_all(fd, st.st_size)
            if _dead(raw) or loads(raw, old) is None:
                return False
            if not self._link_new(new, payload):
                return False
            _overwrite(fd, _DEAD, st.st_size)
            return True

        return bool(self._with_record(path, True, move))

    def rotate(self, old: str, new: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               grace: float, expected: str | None = None, if_record: str | None = None) -> dict[str, Any] | None:
        if not (valid_session_id(old) and valid_session_id(new)) or old == new:
            return None

        def move(fd: int, st: os.stat_result) -> dict[str, Any] | None:
            # Under the old record's exclusive lock: nobody writes it meanwhile, and
            # the record copied is the one stored now.
            if self._expired(st, time.time()):
                return None
            raw = _read_all(fd, st.st_size)
            current = None if _dead(raw) else loads(raw, old)
            if current is None or (if_record is not None and current != json.loads(if_record)):
                return None
            merge(current, changed, removed)
            if not self._link_new(new, dumps(current).encode("utf-8")):
                return None
            _overwrite(fd, _forward_payload(new, time.time() + grace), st.st_size)
            return current

        return self._with_record(self._record_path(old), True, move)

    def touch(self, sid: str) -> None:
        if not valid_session_id(sid):
            return

        def slide(fd: int, st: os.stat_result) -> None:
            if not self._expired(st, time.time()) and not _dead(os.pread(fd, len(_DEAD), 0)):
                os.utime(fd)

        self._with_record(self._record_path(sid), False, slide)

    def delete(self, sid: str) -> str | None:
        if not valid_session_id(sid):
            return None

        def bury(fd: int, st: os.stat_result) -> tuple[str | None]:
            head = os.pread(fd, 128, 0)  # a forward fits: "null", an ID, a time
            target = _forward_of(head, time.time()) if _dead(head) else None
            _overwrite(fd, _DEAD, st.st_size)  # the write also sets the mtime: a fresh lifetime
            return (target,)

        for _ in range(_ATTEMPTS):
            buried = self._with_record(self._record_path(sid), True, bury)
            if buried is not None:
                return buried[0]
            if self._link_new(sid, _DEAD):
                return None
        raise StoreUnavailable("file store: a record file kept disappearing")

    # -- locking (sessup.session.lock) ---------------------------------------------------
    def _lock_path(self, sid: str) -> str:
        return os.path.join(self.path, sid[:2], sid + ".lock")

    def _open_lock_file(self, path: str) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            try:
                return os.open(path, flags, 0o600)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                return os.open(path, flags, 0o600)
        except OSError as exc:
            raise _unavailable(exc) from None

    def acquire_lock(self, sid: str, timeout: float) -> Any:
        if not valid_session_id(sid):
            raise SessionLockTimeout("invalid session id")
        path = self._lock_path(sid)
        # flock is released by the kernel if the holder dies: no stale locks.
        deadline = time.monotonic() + timeout
        while True:
            fd = self._open_lock_file(path)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        pass
                    if time.monotonic() >= deadline:
                        raise SessionLockTimeout(f"session is locked by another request (waited {timeout:g}s)")
                    time.sleep(_POLL)
                # Held; but a lock file removed meanwhile (purge, or by hand) locks
                # nothing: only the file at the path counts.
                try:
                    current = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
            except OSError as exc:
                os.close(fd)
                raise _unavailable(exc) from None
            except BaseException:
                os.close(fd)
                raise
            if current:
                return _HeldLock(fd)
            os.close(fd)

    def release_lock(self, sid: str, token: Any) -> None:
        token.release()

    def _remove_unused_lock_file(self, path: str) -> None:
        """Unlink a lock file nobody holds, holding it ourselves (see acquire_lock)."""
        try:
            fd = os.open(path, _READ_ONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                os.unlink(path)
        except (BlockingIOError, FileNotFoundError):
            pass  # in use, or gone
        finally:
            os.close(fd)

    # -- counters ----------------------------------------------------------------------
    def _open_counter(self, path: str, directory: str | None = None, create: bool = True) -> int | None:
        """Open and flock the counter (or user index) file at ``path``, created if
        absent, or ``None`` without ``create`` if there is none; the descriptor
        returned is locked on the file that is at ``path`` now."""
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        while True:
            try:
                fd = os.open(path, flags, 0o600)
            except FileNotFoundError:
                if not create:
                    return None
                os.makedirs(directory or self._counter_dir, mode=0o700, exist_ok=True)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # A purge may have removed the file between our open and our
                # lock: then we hold a dead inode and must start over.
                if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def modify_counter(self, key: str, fn: CounterFn, ttl: float) -> Any:
        if not valid_counter_key(key):
            raise ValueError("not a counter key")
        path = os.path.join(self._counter_dir, key + ".json")
        try:
            fd = self._open_counter(path)
            assert fd is not None
            try:
                st = os.fstat(fd)
                now = time.time()
                # mtime is the expiry; an empty file is one just created.
                current = loads(_read_all(fd, st.st_size), key) if st.st_size and st.st_mtime > now else None
                new, result = fn(current)
                if new is not None:
                    _overwrite(fd, dumps(new).encode("utf-8"), st.st_size)
                    expires = now + ttl
                    os.utime(fd, (expires, expires))
                return result
            finally:
                os.close(fd)  # releases the flock
        except OSError as exc:
            raise StoreUnavailable(f"file store: {exc.strerror}") from None

    def _purge_counters(self, now: float) -> None:
        try:
            names = os.listdir(self._counter_dir)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self._counter_dir, name)
            try:
                if os.stat(path, follow_symlinks=False).st_mtime > now:
                    continue
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # Still expired, and still the file at that name, under the lock.
                if os.fstat(fd).st_mtime <= now and os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                    os.unlink(path)
            except OSError:
                pass
            finally:
                os.close(fd)

    # -- the user index ------------------------------------------------------------------
    def _user_path(self, user_key: str) -> str:
        # The key was validated: 64 hex digits.
        return os.path.join(self._user_dir, user_key + ".json")

    @staticmethod
    def _index(raw: bytes, user_key: str) -> dict[str, float]:
        data = loads(raw.decode("utf-8", "replace"), user_key) if raw.strip() else None
        return {sid: float(t) for sid, t in (data or {}).items()
                if isinstance(t, (int, float)) and not isinstance(t, bool)}

    def _alive(self, sid: str) -> bool:
        """Whether ``sid`` holds a live record (not expired, not a tombstone)."""
        def alive(fd: int, st: os.stat_result) -> bool:
            return not self._expired(st, time.time()) and not _dead(os.pread(fd, len(_DEAD), 0))

        return valid_session_id(sid) and bool(self._with_record(self._record_path(sid), False, alive))

    def _prune(self, entries: dict[str, float], now: float) -> dict[str, float]:
        """``entries`` without those of dead sessions linked over a timeout ago."""
        return {sid: linked for sid, linked in entries.items()
                if linked > now - self.timeout or self._alive(sid)}

    def _change_user(self, user_key: str, fn: Callable[[dict[str, float]], dict[str, float]],
                     create: bool) -> None:
        """Replace the user's entries by ``fn(entries)`` under the file's lock (which
        also orders it with every other change of that user's index); an empty
        index leaves no file."""
        path = self._user_path(user_key)
        try:
            fd = self._open_counter(path, self._user_dir, create)
            if fd is None:
                return
            try:
                st = os.fstat(fd)
                entries = self._index(_read_all(fd, st.st_size), user_key) if st.st_size else {}
                new = fn(dict(entries))
                if not new:
                    # Under its lock: whoever waits for it finds it unlinked and starts over.
                    os.unlink(path)
                elif new != entries:
                    _overwrite(fd, dumps(new).encode("ascii"), st.st_size)
            finally:
                os.close(fd)  # releases the flock
        except OSError as exc:
            raise _unavailable(exc) from None

    def link_user(self, user_key: str, sid: str) -> None:
        if not (valid_user_key(user_key) and valid_session_id(sid)):
            return

        def link(entries: dict[str, float]) -> dict[str, float]:
            now = time.time()
            entries = self._prune(entries, now)
            entries[sid] = now
            return entries

        self._change_user(user_key, link, create=True)

    def unlink_user(self, user_key: str, sid: str) -> None:
        if not valid_user_key(user_key):
            return

        def unlink(entries: dict[str, float]) -> dict[str, float]:
            entries.pop(sid, None)
            return entries

        self._change_user(user_key, unlink, create=False)

    def user_sessions(self, user_key: str) -> list[tuple[str, float]]:
        if not valid_user_key(user_key):
            return []

        def read(fd: int, st: os.stat_result) -> dict[str, float]:
            return self._index(_read_all(fd, st.st_size), user_key)

        return list((self._with_record(self._user_path(user_key), False, read) or {}).items())

    def _purge_users(self, now: float) -> None:
        try:
            names = os.listdir(self._user_dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".json") and valid_user_key(name[:-5]):
                self._change_user(name[:-5], lambda entries: self._prune(entries, now), create=False)

    # -- operations (sessup-sessions) ------------------------------------------------------
    def _entries(self) -> Iterator[tuple[str, str]]:
        try:
            shards = os.listdir(self.path)
        except FileNotFoundError:
            return
        for shard in shards:
            if len(shard) != 2 or shard.startswith("."):
                continue
            directory = os.path.join(self.path, shard)
            try:
                names = os.listdir(directory)
            except (NotADirectoryError, FileNotFoundError):
                continue
            for name in names:
                yield directory, name

    def ids(self) -> Iterator[str]:
        def alive(fd: int, st: os.stat_result) -> bool:
            return not self._expired(st, time.time()) and not _dead(os.pread(fd, len(_DEAD), 0))

        for directory, name in self._entries():
            if name.endswith(".json") and valid_session_id(name[:-5]):
                if self._with_record(os.path.join(directory, name), False, alive):
                    yield name[:-5]

    def purge_expired(self) -> int:
        now = time.time()
        purged = 0
        for directory, name in list(self._entries()):
            path = os.path.join(directory, name)
            try:
                age = now - os.stat(path, follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if name.endswith(".json") and age > self.timeout:
                # Re-checked under the file's lock: a request may have touched it meanwhile.
                if self._remove_expired(path):
                    purged += 1
            elif name.endswith(".lock") and age > self.timeout:
                if not os.path.exists(path[:-5] + ".json"):
                    self._remove_unused_lock_file(path)
            elif name.endswith(".tmp") and age > 60:
                self._unlink(path)  # left by a crash mid-write
        self._purge_counters(now)
        self._purge_users(time.time())
        return purged
