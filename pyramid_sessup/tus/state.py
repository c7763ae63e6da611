"""Resumable uploads on disk, shared by every process of one upload directory.

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
(:mod:`.concat`).  A deferred length (creation-defer-length) is ``None``
until a PATCH declares it.

The committed offset in the JSON file is the truth.  Bytes beyond it in the
data file (a process killed mid-write) are cut off by the next request that
takes the lock, so an upload is never seen half-written.

sha256 of the finished file: hashlib objects cannot be persisted, so each
process keeps a running hash per upload in memory (bounded) and uses it while
the next chunk starts exactly where that hash stopped; committed bytes never
change, so this is sound.  When another process took over, the sha256 is
computed over the file at completion, in 256 KiB blocks.
"""
from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Iterator

from pyramid.request import Request

from ..exceptions import InsufficientStorage
from ..uploads.events import notify_stored
from ..uploads.pipeline import StoredFile, commit_files, finalize_all, refuses_the_file
from ..uploads.storage import LocalStorage, Storage, in_working_dir, storage_error_message, working_dir
from .protocol import CHECKSUM_ALGORITHMS, CHECKSUM_MISMATCH, TusError

#: ``UploadInfo.concat`` values.
PARTIAL = "partial"
FINAL = "final"

log = logging.getLogger(__name__)

TUS_DIR = ".tus"
#: Upload ids: ``secrets.token_urlsafe(24)``.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
BLOCK = 256 * 1024
#: Running hashes kept per process (uploads in progress here).
HASH_CACHE_SIZE = 256



def owner_digest(token: str) -> str:
    """What the state file keeps of an owner token (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class UploadInfo:
    """The JSON state of one upload."""

    id: str
    owner: str
    #: ``None`` while the length is deferred (creation-defer-length).
    length: int | None
    offset: int
    created: float
    expires: float
    #: Sanitised display name (metadata only).
    filename: str = ""
    #: The type the client claimed (informational).
    filetype: str = ""
    #: ``Upload-Metadata`` as received, echoed by HEAD.
    metadata: str = ""
    #: Extension and media type the stored file gets (server-derived).
    extension: str = ""
    content_type: str = "application/octet-stream"
    done: bool = False
    #: Stored name and sha256 once finished.
    name: str = ""
    sha256: str = ""
    #: "" (a plain upload), "partial" or "final" (concatenation).
    concat: str = ""
    #: A final upload's partial uploads, as the client named them (echoed by HEAD).
    parts: list[str] = field(default_factory=list)

    def owned_by(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.owner, owner_digest(token or ""))

    def expired(self, now: float | None = None) -> bool:
        # A finished partial upload still expires: it waits for its final upload.
        return self.lingers() and self.expires < (time.time() if now is None else now)

    def lingers(self) -> bool:
        """True while the upload is not a stored file (unfinished, or a partial)."""
        return not self.done or self.concat == PARTIAL

    @classmethod
    def from_json(cls, data: Any) -> UploadInfo | None:
        if not isinstance(data, dict):
            return None
        kwargs = {}
        for f in fields(cls):
            if f.name in data:
                kwargs[f.name] = data[f.name]
            elif f.default is MISSING and f.default_factory is MISSING:
                return None  # fields added later have defaults: older records still load
        info = cls(**kwargs)
        length = 0 if info.length is None else info.length
        ints_ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (length, info.offset))
        if not ints_ok or (info.length is not None and info.offset > info.length) or not isinstance(info.done, bool):
            return None
        if info.concat not in ("", PARTIAL, FINAL) or not isinstance(info.parts, list) \
                or not all(isinstance(p, str) for p in info.parts):
            return None
        return info


class Busy(Exception):
    """Another request holds the upload's lock."""


class Gone(Exception):
    """The upload disappeared (terminated, swept) while we waited."""


@dataclass
class AppendResult:
    """What one PATCH body did."""

    written: int
    #: Client stopped sending before Content-Length (bytes kept unless checksummed).
    truncated_body: bool = False


class TusStore:
    """The resumable uploads of one upload directory.

    ``storage``
        Where finished files are committed to (the upload directory, or object storage).

    ``expiry``
        Seconds an unfinished upload lives without a PATCH
        (``sessup.upload.tus_expiry``); each PATCH extends it.
    """

    def __init__(self, storage: Storage, expiry: int, directory: str | None = None) -> None:
        self.storage = storage
        self.expiry = expiry
        root = directory if directory is not None else getattr(storage, "root", None)
        if root is None:
            raise ValueError("resumable uploads need a directory")
        self.dir = os.path.join(root, TUS_DIR)
        os.makedirs(root, exist_ok=True)  # as LocalStorage does at start-up (object storage creates none)
        try:
            os.mkdir(self.dir, 0o700)  # recreated on demand if removed later (working_dir)
        except FileExistsError:
            pass
        self._hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._hash_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------

    def _path(self, upload_id: str, suffix: str) -> str:
        if not ID_PATTERN.fullmatch(upload_id):
            raise ValueError("not an upload id")
        return os.path.join(self.dir, upload_id + suffix)

    def data_path(self, upload_id: str) -> str:
        return self._path(upload_id, ".part")

    # -- state -----------------------------------------------------------------------------

    def create(self, *, owner_token: str, length: int | None, **attrs: Any) -> UploadInfo:
        """A new, empty upload owned by ``owner_token`` (``length`` ``None``: deferred)."""
        now = time.time()
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC

        def new_lock(dir_fd: int) -> str:
            while True:
                upload_id = secrets.token_urlsafe(24)
                try:
                    os.close(os.open(upload_id + ".lock", flags, 0o600, dir_fd=dir_fd))
                except FileExistsError:  # pragma: no cover - 192 random bits
                    continue
                return upload_id

        upload_id = in_working_dir(self.dir, new_lock)
        try:
            # (the lock file keeps the folder from being removed as empty from here on)
            with working_dir(self.dir) as dir_fd:
                os.close(os.open(upload_id + ".part", flags, 0o600, dir_fd=dir_fd))
            info = UploadInfo(id=upload_id, owner=owner_digest(owner_token), length=length, offset=0,
                              created=now, expires=now + self.expiry, **attrs)
            self.save(info)
        except BaseException:
            self._remove_files(upload_id)
            raise
        return info

    def load(self, upload_id: str) -> UploadInfo | None:
        """The state of an upload, or ``None`` (malformed id, unknown, unreadable)."""
        if not isinstance(upload_id, str) or not ID_PATTERN.fullmatch(upload_id):
            return None
        try:
            fd = os.open(self._path(upload_id, ".json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
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
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
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
        """Hold the upload's lock (never waiting) and yield its fresh state.

        Raises :class:`Busy` when another request (any process) holds it and
        :class:`Gone` when the upload no longer exists.
        """
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
        """Append a PATCH body at ``info.offset`` (the caller holds the lock
        and has checked the offset); update ``info.offset`` on success.

        ``chunks`` yields the body in blocks and raises :class:`TusError` (413)
        itself when the body would pass ``info.length``; a short body ends
        with :class:`ConnectionError`.  A checksum mismatch (460), a refused
        body or a disk error truncate the file back: the chunk is not applied.
        Without a checksum, the bytes of a body cut short are kept.
        """
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

    def touch(self, info: UploadInfo) -> None:
        """Extend an unfinished upload's life by ``expiry`` from now."""
        info.expires = time.time() + self.expiry

    def complete(self, info: UploadInfo, request: Request | None = None, *, digest: Any = None) -> None:
        """Commit a fully received upload (lock held): sha256 (``digest``: a
        sha256 object already fed the whole file skips the reading pass), then,
        through :func:`~pyramid_sessup.uploads.pipeline.commit_files` when
        ``request`` is given, the checks every upload passes (content, virus
        scan, verifiers), a final random name and metadata beside it, and the
        ``UploadStored`` event once ``info`` records the result.

        A file a check refuses (415, 422, a verifier's error) is removed with
        its upload; on any other failure (scanner down, disk full) the bytes
        are kept, so that sending the last chunk again completes it.

        A partial upload is only marked finished: its bytes stay, and it
        keeps expiring, until a final upload joins it (and is checked)."""
        if info.concat == PARTIAL:
            self._take_hash(info.id, info.offset)  # never needed: a partial has no sha256 of its own
            info.done = True
            self.touch(info)
            self.save(info)
            return
        if digest is None:
            digest = self._take_hash(info.id, info.offset)
        data_path = self.data_path(info.id)
        if digest is None or info.offset == 0:
            digest = hashlib.sha256()
            with open(data_path, "rb", buffering=0) as f:
                while block := f.read(BLOCK):
                    digest.update(block)
        sha256 = digest.hexdigest()
        temp_path, moved = self._into_temp(data_path)
        pending = StoredFile(field="tus", filename=info.filename, content_type=info.content_type, size=info.offset,
                             sha256=sha256, temp_path=temp_path, client_content_type=info.filetype,
                             extension=info.extension)
        try:
            if request is not None:
                commit_files(request, self.storage, [pending], charge_quota=False, notify=False)
            else:
                finalize_all(self.storage, [pending])
        except BaseException as exc:
            if refuses_the_file(exc):
                if pending.temp_path:
                    self.storage.discard(pending.temp_path)
                self._remove_files(info.id)
                raise
            if moved:
                try:
                    os.replace(temp_path, data_path)  # keep the bytes: a retry can complete it
                except FileNotFoundError:  # pragma: no cover - finalize removed it: damaged (410 next time)
                    pass
            elif pending.temp_path:
                self.storage.discard(pending.temp_path)  # the local bytes stay for a retry
            message = storage_error_message(exc)
            if message is not None:
                raise TusError(507, message) from exc
            if isinstance(exc, InsufficientStorage):
                raise TusError(507, str(exc)) from exc
            raise
        name = pending.name
        info.done, info.name, info.sha256 = True, name, sha256
        info.expires = time.time() + self.expiry  # how long this record is kept
        try:
            self.save(info)
        except BaseException:
            self.storage.delete(name)
            raise
        if request is not None:
            notify_stored(request, [pending])
        if not moved:
            try:
                os.unlink(data_path)  # the object storage has it now
            except FileNotFoundError:  # pragma: no cover
                pass

    def _into_temp(self, data_path: str) -> tuple[str, bool]:
        """Make the finished data file a temporary file of the storage: moved
        into the upload directory's ``.tmp``, or copied into object storage (the
        data file stays until the upload is removed).  Returns (handle, moved)."""
        temp_file, temp_path = self.storage.open_temp()
        if isinstance(self.storage, LocalStorage):
            temp_file.close()
            os.replace(data_path, temp_path)
            return temp_path, True
        try:
            with open(data_path, "rb", buffering=0) as f:
                while block := f.read(BLOCK):
                    temp_file.write(block)
            temp_file.close()
        except BaseException:
            temp_file.abort()
            raise
        return temp_path, False

    def remove(self, upload_id: str) -> None:
        """Terminate an upload by id if it still exists (no error if it is
        gone or busy): the clean-up of a failed creation."""
        try:
            with self.locked(upload_id) as info:
                self.terminate(info)
        except (Busy, Gone):
            pass

    # -- removal -----------------------------------------------------------------------------

    def terminate(self, info: UploadInfo) -> None:
        """Remove an upload (lock held): its state, its bytes, and a stored
        result if it had finished."""
        if info.done and info.name:
            self.storage.delete(info.name)
        self._remove_files(info.id)

    def _remove_files(self, upload_id: str) -> None:
        # State first: from then on every look-up answers 404.
        for suffix in (".json", ".part", ".lock"):
            try:
                os.unlink(self._path(upload_id, suffix))
            except FileNotFoundError:
                pass
        with self._hash_lock:
            self._hashes.pop(upload_id, None)

    def declare_length(self, info: UploadInfo, value: int, limit: int) -> None:
        """Check a length declared by a PATCH of a deferred upload (the caller
        sets ``info.length`` once the chunk is applied)."""
        if info.length is not None:
            raise TusError(400, "Upload-Length is already set; it cannot be declared again")
        if value > limit:
            raise TusError(413, f"Upload-Length is larger than sessup.upload.max_file_size ({limit} bytes)",
                           {"Tus-Max-Size": str(limit)})
        if value < info.offset:
            raise TusError(400, f"Upload-Length {value} is less than the {info.offset} bytes already received")

    def discard_if_expired(self, info: UploadInfo) -> bool:
        """Remove an expired unfinished upload unless busy; True if removed."""
        try:
            with self.locked(info.id) as fresh:
                if fresh.expired():
                    self._remove_files(fresh.id)
                    return True
        except (Busy, Gone):
            pass
        return False

    def sweep(self, now: float | None = None) -> int:
        """Remove expired unfinished uploads (partial ones, finished or not,
        included), finished uploads' records older than the expiry (their
        stored files stay), and stray files left by a crash; return how many
        unfinished or partial uploads were removed."""
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
            if info.expires >= now:
                continue
            try:
                with self.locked(upload_id) as fresh:
                    if fresh.expires < now:
                        self._remove_files(upload_id)
                        removed += 1 if fresh.lingers() else 0
            except (Busy, Gone):
                continue
        return removed

    # -- running hashes ------------------------------------------------------------------------

    def _take_hash(self, upload_id: str, offset: int) -> Any:
        with self._hash_lock:
            entry = self._hashes.pop(upload_id, None)
        if entry is not None and entry[0] == offset:
            return entry[1]
        return hashlib.sha256() if offset == 0 else None

    def _put_hash(self, upload_id: str, offset: int, running: Any) -> None:
        with self._hash_lock:
            self._hashes[upload_id] = (offset, running)
            while len(self._hashes) > HASH_CACHE_SIZE:
                self._hashes.popitem(last=False)


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


def sweep(root: str, expiry: int, *, now: float | None = None) -> int:
    """Remove the expired tus uploads of the upload directory ``root`` (for
    a cron job or the sweep command); return how many unfinished ones went."""
    return TusStore(LocalStorage(root), expiry).sweep(now)
