"""Resumable uploads on disk (``sessup.upload.storage = local``), shared by
every process of one upload directory.

Layout (beside :class:`~pyramid_sessup.uploads.storage.LocalStorage`'s own)::

    <root>/.tus/<id>.json    the upload's state (owner, length, committed offset, expiry, result);
                             replaced atomically (write a temporary file, then rename)
    <root>/.tus/<id>.part    the bytes received so far
    <root>/.tus/<id>.lock    flock()ed (non-blocking) by the one request changing the upload

Why a directory of our own and not ``LocalStorage``'s ``.tmp``: that directory
is swept after ``sessup.upload.temp_max_age`` of inactivity (crash leftovers),
while a paused tus upload must live until ``sessup.upload.tus_expiry``.  On
completion the data file is moved into a fresh ``.tmp`` name and committed with
:meth:`LocalStorage.finalize`, so a finished upload is stored, named and
described exactly like an ``/upFile`` result.

Partial uploads (concatenation) are kept the same way; a finished partial is
not committed but waits, still expiring, to be joined by a final upload
(:mod:`.concat`): :meth:`LocalTusStore.join` copies each partial's bytes
once, straight into the final upload's data file (``os.copy_file_range``:
inside the kernel, or a reflink on file systems that share extents;
``pread``/``pwrite`` where it is missing), then reads the joined file once
for its sha256.  A deferred length (creation-defer-length) is ``None`` until a
PATCH declares it.

The committed offset in the JSON file is the truth.  Bytes beyond it in the
data file (a process killed mid-write) are cut off by the next request that
takes the lock, so an upload is never seen half-written.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any, Iterator

from ..uploads.storage import LocalStorage, Storage, in_working_dir, storage_error_message, working_dir
from .protocol import CHECKSUM_ALGORITHMS, CHECKSUM_MISMATCH, TusError
from .state import ID_PATTERN, AppendResult, Busy, Gone, TusStore, UploadInfo, owner_digest

TUS_DIR = ".tus"
#: Bytes per ``copy_file_range`` call (the kernel may copy less).
COPY_STEP = 64 * 1024 * 1024
#: Bytes per read of the joining hash pass and of the ``pread``/``pwrite`` fallback.
READ_STEP = 1024 * 1024
#: copy_file_range cannot serve these file descriptors here: fall back to pread/pwrite.
_NO_COPY_RANGE = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF}
_CREATE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class LocalTusStore(TusStore):
    """The resumable uploads of one upload directory (``<root>/.tus``).

    ``storage``
        The upload directory finished files are committed to.

    ``expiry``
        Seconds an unfinished upload lives without a PATCH
        (``sessup.upload.tus_expiry``); each PATCH extends it.
    """

    storage: LocalStorage

    def __init__(self, storage: Storage, expiry: int) -> None:
        if not isinstance(storage, LocalStorage):
            raise TypeError("LocalTusStore keeps its uploads in an upload directory (LocalStorage)")
        super().__init__(storage, expiry)
        self.dir = os.path.join(storage.root, TUS_DIR)
        try:
            os.mkdir(self.dir, 0o700)  # recreated on demand if removed later (working_dir)
        except FileExistsError:
            pass

    # -- paths ---------------------------------------------------------------------------

    def _path(self, upload_id: str, suffix: str) -> str:
        if not ID_PATTERN.fullmatch(upload_id):
            raise ValueError("not an upload id")
        return os.path.join(self.dir, upload_id + suffix)

    def data_path(self, upload_id: str) -> str:
        return self._path(upload_id, ".part")

    # -- state -----------------------------------------------------------------------------

    def create(self, *, owner_token: str, length: int | None, **attrs: Any) -> UploadInfo:
        now = time.time()

        def new_lock(dir_fd: int) -> str:
            while True:
                upload_id = secrets.token_urlsafe(24)
                try:
                    os.close(os.open(upload_id + ".lock", _CREATE_FLAGS, 0o600, dir_fd=dir_fd))
                except FileExistsError:  # pragma: no cover - 192 random bits
                    continue
                return upload_id

        upload_id = in_working_dir(self.dir, new_lock)
        try:
            # (the lock file keeps the folder from being removed as empty from here on)
            with working_dir(self.dir) as dir_fd:
                os.close(os.open(upload_id + ".part", _CREATE_FLAGS, 0o600, dir_fd=dir_fd))
            info = UploadInfo(id=upload_id, owner=owner_digest(owner_token), length=length, offset=0,
                              created=now, expires=now + self.expiry, **attrs)
            self.save(info)
        except BaseException:
            self._remove_files(upload_id)
            raise
        return info

    def load(self, upload_id: str) -> UploadInfo | None:
        if not isinstance(upload_id, str) or not ID_PATTERN.fullmatch(upload_id):
            return None
        try:
            fd = os.open(self._path(upload_id, ".json"), _READ_FLAGS)
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read(64 * 1024))
        except (OSError, ValueError):
            return None
        return UploadInfo.from_json(data)

    def save(self, info: UploadInfo) -> None:
        """Replace the state file atomically: readers see the old or the new state."""
        data = json.dumps(asdict(info), ensure_ascii=False, sort_keys=True).encode("utf-8")
        tmp = f".{secrets.token_urlsafe(12)}.tmp"
        target = os.path.basename(self._path(info.id, ".json"))
        with working_dir(self.dir) as dir_fd:
            fd = os.open(tmp, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    if self.storage.fsync:
                        f.flush()
                        os.fsync(f.fileno())
                os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                raise

    @contextmanager
    def locked(self, upload_id: str) -> Iterator[UploadInfo]:
        path = self._path(upload_id, ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise Gone() from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy() from None
            # The lock file may have been removed (termination, sweep) between
            # our open and our flock: then we locked a dead inode.
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            info = self.load(upload_id) if same else None
            if info is None:
                raise Gone()
            yield info
        finally:
            os.close(fd)  # releases the flock

    # -- data --------------------------------------------------------------------------------

    def append(self, info: UploadInfo, chunks: Iterator[bytes], *,
               checksum: tuple[str, bytes] | None = None) -> AppendResult:
        """See :meth:`TusStore.append`; here a refused chunk is cut off the data file again."""
        start = info.offset
        verify = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        running = self._take_hash(info.id, start)
        written = 0
        truncated = False
        try:
            fd = os.open(self.data_path(info.id), os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TusError(410, "The upload's data is gone; start a new upload") from None
        try:
            size = os.fstat(fd).st_size
            if size != start:
                if size < start:
                    # Bytes we committed are missing: nothing sane to continue from.
                    raise TusError(410, "The upload's data is damaged; start a new upload")
                os.ftruncate(fd, start)  # left by a process killed mid-write
            os.lseek(fd, start, os.SEEK_SET)
            try:
                for block in chunks:
                    view = memoryview(block)
                    while view:
                        n = os.write(fd, view)
                        view = view[n:]
                    written += len(block)
                    if verify is not None:
                        verify.update(block)
                    if running is not None:
                        running.update(block)
            except ConnectionError:
                truncated = True
                if verify is not None:
                    raise TusError(400, "The request body ended early; the chunk was discarded") from None
            if checksum is not None and verify is not None and not truncated \
                    and not hmac.compare_digest(verify.digest(), checksum[1]):
                raise TusError(CHECKSUM_MISMATCH, f"{checksum[0]} checksum mismatch; the chunk was not applied")
            if self.storage.fsync:
                os.fsync(fd)
        except BaseException as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:  # pragma: no cover - the next lock holder truncates
                pass
            message = storage_error_message(exc)
            if message is not None:
                raise TusError(507, message) from exc
            raise
        finally:
            os.close(fd)
        info.offset = start + written
        if running is not None:
            self._put_hash(info.id, info.offset, running)
        return AppendResult(written, truncated)

    # -- completion ------------------------------------------------------------------------------

    def _into_temp(self, info: UploadInfo) -> str:
        """Move the finished data file into the upload directory's ``.tmp``."""
        temp_file, temp_path = self.storage.open_temp()
        temp_file.close()
        os.replace(self.data_path(info.id), temp_path)
        return temp_path

    def _restore(self, info: UploadInfo, handle: str) -> None:
        if not handle:
            return  # pragma: no cover - finalize removed it: damaged (410 next time)
        try:
            os.replace(handle, self.data_path(info.id))  # keep the bytes: a retry can complete it
        except FileNotFoundError:  # pragma: no cover - finalize removed it: damaged (410 next time)
            pass

    # -- concatenation -------------------------------------------------------------------------

    def join(self, final: UploadInfo, partials: Sequence[UploadInfo], checksum: tuple[str, bytes] | None) -> Any:
        """Copy the partials, in order, into the final upload's (empty) data
        file, then read it once (see :meth:`TusStore.join`)."""
        out_fd = os.open(self.data_path(final.id), _WRITE_FLAGS)
        try:
            position = 0
            for part in partials:
                length = part.length or 0
                in_fd = os.open(self.data_path(part.id), _READ_FLAGS)
                try:
                    if os.fstat(in_fd).st_size < length:
                        raise TusError(410, f"The data of the partial upload {part.id} is damaged; upload it again")
                    copy_range(in_fd, out_fd, length, position)
                finally:
                    os.close(in_fd)
                position += length
            if self.storage.fsync:
                os.fsync(out_fd)
        finally:
            os.close(out_fd)

        sha256 = hashlib.sha256()
        verify = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        buffer = bytearray(READ_STEP)
        view = memoryview(buffer)
        with open(self.data_path(final.id), "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                sha256.update(view[:n])
                if verify is not None:
                    verify.update(view[:n])
        if checksum is not None and verify is not None and not hmac.compare_digest(verify.digest(), checksum[1]):
            raise TusError(CHECKSUM_MISMATCH, f"{checksum[0]} checksum of the joined upload does not match; "
                           "nothing was stored, the partial uploads are kept")
        return sha256

    # -- removal -----------------------------------------------------------------------------

    def _remove_files(self, upload_id: str) -> None:
        for suffix in (".json", ".part", ".lock"):
            try:
                os.unlink(self._path(upload_id, suffix))
            except FileNotFoundError:
                pass
        self._forget_hash(upload_id)

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        ids = set()
        for entry in entries:
            stem, dot, suffix = entry.name.partition(".")
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                _remove_if_older(entry.path, now - 60)  # a save() interrupted by a crash
            elif ID_PATTERN.fullmatch(stem) and suffix in ("json", "part", "lock"):
                ids.add(stem)
        for upload_id in sorted(ids):
            info = self.load(upload_id)
            if info is None:
                # No (valid) state: leftovers of a crash during create or removal.
                if all(_older(self._path(upload_id, s), now - self.expiry) for s in (".json", ".part", ".lock")):
                    self._remove_files(upload_id)
                continue
            if info.expires < now:
                removed += self._expire(upload_id, now)
        return removed


def copy_range(src: int, dst: int, count: int, dst_offset: int) -> None:
    """Copy ``count`` bytes from the start of ``src`` to ``dst`` at
    ``dst_offset``: in the kernel where it can, else through a small buffer."""
    copied = 0
    copy_file_range = getattr(os, "copy_file_range", None)
    while copied < count and copy_file_range is not None:
        try:
            n = copy_file_range(src, dst, min(count - copied, COPY_STEP), copied, dst_offset + copied)
        except OSError as exc:
            if exc.errno not in _NO_COPY_RANGE:
                raise
            break
        if n == 0:
            raise TusError(410, "A partial upload's data ended early; upload it again")
        copied += n
    while copied < count:
        block = os.pread(src, min(count - copied, READ_STEP), copied)
        if not block:
            raise TusError(410, "A partial upload's data ended early; upload it again")
        view = memoryview(block)
        while view:
            written = os.pwrite(dst, view, dst_offset + copied)
            view = view[written:]
            copied += written


def _older(path: str, cutoff: float) -> bool:
    try:
        return os.lstat(path).st_mtime < cutoff
    except FileNotFoundError:
        return True


def _remove_if_older(path: str, cutoff: float) -> None:
    if _older(path, cutoff):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
