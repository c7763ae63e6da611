"""File session store: one JSON file per session, for one machine.

Layout under ``sessup.session.file.path``::

    ab/abXXXX…XXXX.json   the record
    ab/abXXXX…XXXX.lock   the session lock of ``sessup.session.lock`` (flock)
    .merge/NN.lock        short reader/writer locks, striped over 16 files
    .quota/<key>.json     counters (upload quotas), each flock()ed while it changes;
                          the file's modification time is its expiry

The file's modification time is the last access: a read-only request only
``utime``s the file (touch without rewrite), and a record whose mtime is older
than the timeout is expired.  Writers merge per key under the stripe's
exclusive lock, so two processes writing different keys of one session both
persist; readers hold it shared, so they never see a half-written record.

A new record is written to a temporary file and renamed into place; an
existing one is overwritten in place, padded with spaces (JSON ignores them)
so the file never shrinks.  Replacing or truncating a file frees its blocks,
which on this kind of filesystem (ext4, ``discard``) cost about a millisecond
of kernel time per write; overwriting costs a few microseconds.  The price:
a power cut in the middle of a write can leave one session unreadable, and it
then counts as corrupt (a new, empty session), never as someone else's data.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping

from ..exceptions import SessionLockTimeout, StoreUnavailable
from .base import CounterFn, SessionStore, dumps, loads, merge, valid_counter_key, valid_session_id

_STRIPES = 16
_POLL = 0.005  # seconds between two tries of a held session lock


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


class _StripeDescriptors(dict):  # type: ignore[type-arg]
    """One thread's open stripe-lock descriptors.  Thread-local data is
    released when its thread ends, and this closes them then: threads that come
    and go leak nothing."""

    def __del__(self) -> None:
        for fd in self.values():
            try:
                os.close(fd)
            except OSError:
                pass


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
        self._merge_dir = os.path.join(path, ".merge")
        self._counter_dir = os.path.join(path, ".quota")
        os.makedirs(self._merge_dir, mode=0o700, exist_ok=True)
        # Each thread keeps its own descriptor per stripe: flock excludes open
        # file descriptions, so threads must not share one, and reopening the
        # lock file on every request cost three system calls (each a GIL hand-off).
        self._local = threading.local()

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> "FileStore":
        return cls(values["session.file.path"], timeout=values["session.timeout"])

    # -- paths and locks -----------------------------------------------------------------
    def _record_path(self, sid: str) -> str:
        # The ID was validated: 43 URL-safe characters, no dots or slashes.
        return os.path.join(self.path, sid[:2], sid + ".json")

    @contextmanager
    def _merge_lock(self, sid: str, shared: bool = False) -> Iterator[None]:
        stripe = zlib.crc32(sid.encode("ascii")) % _STRIPES
        fds = getattr(self._local, "fds", None)
        if fds is None:
            fds = self._local.fds = _StripeDescriptors()
        fd = fds.get(stripe)
        if fd is None:
            fd = fds[stripe] = os.open(os.path.join(self._merge_dir, f"{stripe:02d}.lock"),
                                       os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _read(self, path: str, now: float, *, touch: bool = False) -> str | None:
        """The record's text, or None if absent or expired (an expired one is removed).

        With ``touch``, the access time slides on the same descriptor.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"file store: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if now - st.st_mtime > self.timeout:
                expired = True
            else:
                expired = False
                raw = _read_all(fd, st.st_size)
                if touch:
                    os.utime(fd)
        except OSError as exc:
            raise StoreUnavailable(f"file store: {exc.strerror}") from None
        finally:
            os.close(fd)
        if expired:
            self._unlink(path)
            return None
        return raw.decode("utf-8", "replace")

    def _write(self, sid: str, data: Mapping[str, Any]) -> None:
        """Write the record; the caller holds the stripe's exclusive lock."""
        path = self._record_path(sid)
        payload = dumps(data).encode("utf-8")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            self._write_new(sid, path, payload)
            return
        except OSError as exc:
            raise StoreUnavailable(f"file store: {exc.strerror}") from None
        try:
            _overwrite(fd, payload, os.fstat(fd).st_size)
        except OSError as exc:
            raise StoreUnavailable(f"file store: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _write_new(self, sid: str, path: str, payload: bytes) -> None:
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
            os.replace(tmp, path)
        except OSError as exc:
            self._unlink(tmp)
            raise StoreUnavailable(f"file store: {exc.strerror}") from None

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    # -- the contract -------------------------------------------------------------------
    def load(self, sid: str, *, touch: bool = True) -> dict[str, Any] | None:
        if not valid_session_id(sid):
            return None
        with self._merge_lock(sid, shared=True):
            raw = self._read(self._record_path(sid), time.time(), touch=touch)
        return loads(raw, sid)

    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        with self._merge_lock(sid):
            if self._read(self._record_path(sid), time.time()) is not None:
                return False
            self._write(sid, data)
            return True

    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        if not valid_session_id(sid):
            return None
        path = self._record_path(sid)
        with self._merge_lock(sid):
            # One descriptor to read, merge and overwrite: fewer system calls.
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StoreUnavailable(f"file store: {exc.strerror}") from None
            try:
                st = os.fstat(fd)
                expired = time.time() - st.st_mtime > self.timeout
                current = None if expired else loads(_read_all(fd, st.st_size), sid)
                if current is not None:
                    _overwrite(fd, dumps(merge(current, changed, removed)).encode("utf-8"), st.st_size)
            except OSError as exc:
                raise StoreUnavailable(f"file store: {exc.strerror}") from None
            finally:
                os.close(fd)
            if expired:
                self._unlink(path)
            return current

    def replace(self, sid: str, data: Mapping[str, Any]) -> None:
        if not valid_session_id(sid):
            return
        with self._merge_lock(sid):
            self._write(sid, data)

    def touch(self, sid: str) -> None:
        if not valid_session_id(sid):
            return
        try:
            os.utime(self._record_path(sid))
        except FileNotFoundError:
            pass

    def delete(self, sid: str) -> None:
        if not valid_session_id(sid):
            return
        with self._merge_lock(sid):
            self._unlink(self._record_path(sid))

    def acquire_lock(self, sid: str, timeout: float) -> Any:
        if not valid_session_id(sid):
            raise SessionLockTimeout("invalid session id")
        path = os.path.join(self.path, sid[:2], sid + ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        # flock is released by the kernel if the holder dies: no stale locks.
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return _HeldLock(fd)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise StoreUnavailable(f"file store: {exc.strerror}") from None
            if time.monotonic() >= deadline:
                os.close(fd)
                raise SessionLockTimeout(f"session is locked by another request (waited {timeout:g}s)")
            time.sleep(_POLL)

    def release_lock(self, sid: str, token: Any) -> None:
        token.release()

    # -- counters ----------------------------------------------------------------------
    def _open_counter(self, path: str) -> int:
        """Open and flock the counter file at ``path`` (created if absent); the
        descriptor returned is locked on the file that is at ``path`` now."""
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                os.makedirs(self._counter_dir, mode=0o700, exist_ok=True)
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
        now = time.time()
        for directory, name in self._entries():
            if name.endswith(".json"):
                try:
                    if now - os.stat(os.path.join(directory, name)).st_mtime <= self.timeout:
                        yield name[:-5]
                except FileNotFoundError:
                    continue

    def purge_expired(self) -> int:
        now = time.time()
        purged = 0
        for directory, name in list(self._entries()):
            path = os.path.join(directory, name)
            try:
                age = now - os.stat(path).st_mtime
            except FileNotFoundError:
                continue
            if name.endswith(".json") and age > self.timeout:
                sid = name[:-5]
                with self._merge_lock(sid):
                    # Re-check under the lock: a request may have touched it meanwhile.
                    if self._read(path, time.time()) is None:
                        purged += 1
            elif name.endswith(".lock") and age > self.timeout:
                if not os.path.exists(path[:-5] + ".json"):
                    self._unlink(path)
            elif name.endswith(".tmp") and age > 60:
                self._unlink(path)  # left by a crash mid-write
        self._purge_counters(now)
        return purged
