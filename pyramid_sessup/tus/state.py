"""What a resumable upload is, whatever keeps it: :class:`UploadInfo` (its
state) and :class:`TusStore` (the interface :mod:`.views` and :mod:`.concat`
use).  Two stores implement it, chosen by ``sessup.upload.storage``
(:func:`make_tus_store`):

* :class:`~.local.LocalTusStore`: state and bytes under the upload
  directory's ``.tus``, one ``flock`` per upload;
* :class:`~.s3store.S3TusStore`: state, staged bytes and a multipart upload
  in the bucket, a lease per upload in its state object, so that any machine
  can continue an upload another one started.

Every store keeps the same promises, which the tests check on both:

* one request at a time changes an upload (:meth:`TusStore.locked`; any
  other gets :class:`Busy`, i.e. 409);
* the offset a request sees is one the store committed: a PATCH whose
  checksum does not match, or which fails, changes nothing; bytes of a body
  cut short (without a checksum) are kept;
* a finished upload is committed once, through the same checks and with the
  same metadata as an ``/upFile`` result (:meth:`TusStore.complete`); a
  refused one leaves nothing behind; one that failed for a passing reason
  (scanner down, storage unavailable) stays at the offset before its last
  chunk, so that sending that chunk again completes it;
* an expired, terminated or refused upload leaves nothing behind.

sha256 of the finished file: hashlib objects cannot be persisted, so each
process keeps a running hash per upload in memory (bounded) and uses it while
the next chunk starts exactly where that hash stopped; committed bytes never
change, so this is sound.  When another process (or machine) took over, the
sha256 is computed at completion by reading the finished bytes once.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import MISSING, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterator

from pyramid.request import Request

from ..exceptions import InsufficientStorage
from ..uploads.events import notify_stored
from ..uploads.pipeline import StoredFile, commit_files, finalize_all, refuses_the_file
from ..uploads.storage import Storage, storage_error_message
from .protocol import TusError

if TYPE_CHECKING:
    from ..settings import SessupSettings

#: ``UploadInfo.concat`` values.
PARTIAL = "partial"
FINAL = "final"

#: Upload ids: ``secrets.token_urlsafe(24)``.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{32}")
#: Bytes per read when the finished file is hashed again.
BLOCK = 256 * 1024
#: Running hashes kept per process (uploads in progress here).
HASH_CACHE_SIZE = 256


def owner_digest(token: str) -> str:
    """What the state keeps of an owner token (never the token itself)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class UploadInfo:
    """The state of one upload (a JSON object in every store)."""

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
    #: Where the store keeps the bytes (its own business: empty for the upload directory).
    store: dict[str, Any] = field(default_factory=dict)

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
                or not all(isinstance(p, str) for p in info.parts) or not isinstance(info.store, dict):
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


class TusStore(ABC):
    """The resumable uploads of one application, wherever they are kept.

    ``storage``
        Where finished files are committed to (:class:`~pyramid_sessup.uploads.storage.Storage`).

    ``expiry``
        Seconds an unfinished upload lives without a PATCH
        (``sessup.upload.tus_expiry``); each PATCH extends it.

    Methods that change an upload expect the caller to hold its lock
    (:meth:`locked`) and to pass the :class:`UploadInfo` it yielded.
    """

    def __init__(self, storage: Storage, expiry: int) -> None:
        self.storage = storage
        self.expiry = expiry
        self._hashes: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._hash_lock = threading.Lock()

    def _expire(self, upload_id: str, now: float) -> int:
        """Remove an upload found expired, if it still is once locked (a PATCH may
        have extended it meanwhile); 1 if it counted as an unfinished upload."""
        try:
            with self.locked(upload_id) as fresh:
                if fresh.expires < now:
                    self._remove_files(upload_id)
                    return 1 if fresh.lingers() else 0
        except (Busy, Gone):
            pass
        return 0

    # -- what each store provides -------------------------------------------------------------

    @abstractmethod
    def create(self, *, owner_token: str, length: int | None, **attrs: Any) -> UploadInfo:
        """A new, empty upload owned by ``owner_token`` (``length`` ``None``: deferred)."""

    @abstractmethod
    def load(self, upload_id: str) -> UploadInfo | None:
        """The state of an upload, or ``None`` (malformed id, unknown, unreadable)."""

    @abstractmethod
    def save(self, info: UploadInfo) -> None:
        """Record ``info``: readers see the old or the new state, never a mix."""

    @abstractmethod
    def locked(self, upload_id: str) -> AbstractContextManager[UploadInfo]:
        """Hold the upload's lock (never waiting) and yield its fresh state.

        Raises :class:`Busy` when another request (any process) holds it and
        :class:`Gone` when the upload no longer exists.
        """

    @abstractmethod
    def append(self, info: UploadInfo, chunks: Iterator[bytes], *,
               checksum: tuple[str, bytes] | None = None) -> AppendResult:
        """Append a PATCH body at ``info.offset`` (lock held, offset checked);
        update ``info.offset`` on success (the caller saves it).

        ``chunks`` yields the body in blocks and raises :class:`TusError` (413)
        itself when the body would pass ``info.length``; a short body ends
        with :class:`ConnectionError`.  A checksum mismatch (460), a refused
        body or a storage error leave the committed state as it was.
        Without a checksum, the bytes of a body cut short are kept.
        """

    @abstractmethod
    def join(self, final: UploadInfo, partials: Sequence[UploadInfo], checksum: tuple[str, bytes] | None) -> Any:
        """Concatenation: make the bytes of the finished ``partials`` (locks
        held), in order, the bytes of the empty upload ``final`` (lock held);
        return their sha256 object.  460 when ``checksum`` (of the whole file)
        does not match; 410 when a partial's bytes are damaged."""

    @abstractmethod
    def sweep(self, now: float | None = None) -> int:
        """Remove expired unfinished uploads (partial ones, finished or not,
        included), finished uploads' records older than the expiry (their
        stored files stay), and what a crash left; return how many
        unfinished or partial uploads were removed."""

    @abstractmethod
    def _remove_files(self, upload_id: str) -> None:
        """Remove everything the store keeps of an upload, its state first
        (from then on every look-up answers 404)."""

    @abstractmethod
    def _into_temp(self, info: UploadInfo) -> str:
        """The upload's finished bytes as a temporary file of :attr:`storage`
        (its handle), ready for :func:`~pyramid_sessup.uploads.pipeline.commit_files`."""

    @abstractmethod
    def _restore(self, info: UploadInfo, handle: str) -> None:
        """Undo :meth:`_into_temp` after a passing failure: the upload is back
        at its last recorded state, so that its last chunk can be sent again.
        ``handle`` is empty when the storage already consumed the bytes."""

    def _seal_partial(self, info: UploadInfo) -> None:
        """A partial upload received its last byte: keep its bytes where :meth:`join` reads them."""

    def _after_commit(self, info: UploadInfo) -> None:
        """The upload's file is stored and its state recorded: drop what held its bytes."""

    # -- shared by every store ------------------------------------------------------------------

    def touch(self, info: UploadInfo) -> None:
        """Extend an unfinished upload's life by ``expiry`` from now."""
        info.expires = time.time() + self.expiry

    def declare_length(self, info: UploadInfo, value: int, limit: int) -> None:
        """Check a length declared by a PATCH of a deferred upload (the caller
        sets ``info.length`` with the chunk)."""
        if info.length is not None:
            raise TusError(400, "Upload-Length is already set; it cannot be declared again")
        if value > limit:
            raise TusError(413, f"Upload-Length is larger than sessup.upload.max_file_size ({limit} bytes)",
                           {"Tus-Max-Size": str(limit)})
        if value < info.offset:
            raise TusError(400, f"Upload-Length {value} is less than the {info.offset} bytes already received")

    def complete(self, info: UploadInfo, request: Request | None = None, *, digest: Any = None) -> None:
        """Commit a fully received upload (lock held): sha256 (``digest``: a
        sha256 object already fed the whole file skips the reading pass), then,
        through :func:`~pyramid_sessup.uploads.pipeline.commit_files` when
        ``request`` is given, the checks every upload passes (content, virus
        scan, verifiers), a final random name and metadata beside it, and the
        ``UploadStored`` event once ``info`` records the result.

        A file a check refuses (415, 422, a verifier's error) is removed with
        its upload; on any other failure (scanner down, disk full, storage
        unavailable) the upload stays at its last recorded offset, so that
        sending the last chunk again completes it.

        A partial upload is only marked finished: its bytes stay, and it
        keeps expiring, until a final upload joins it (and is checked)."""
        if info.concat == PARTIAL:
            self._take_hash(info.id, info.offset)  # never needed: a partial has no sha256 of its own
            self._seal_partial(info)
            info.done = True
            self.touch(info)
            self.save(info)
            return
        if digest is None:
            digest = self._take_hash(info.id, info.offset)
        handle = self._into_temp(info)
        pending = StoredFile(field="tus", filename=info.filename, content_type=info.content_type, size=info.offset,
                             sha256="", temp_path=handle, client_content_type=info.filetype,
                             extension=info.extension)
        try:
            if digest is None or info.offset == 0:
                digest = self._hash_temp(handle)
            pending.sha256 = digest.hexdigest()
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
            self._restore(info, pending.temp_path)
            message = storage_error_message(exc)
            if message is not None:
                raise TusError(507, message) from exc
            if isinstance(exc, InsufficientStorage):
                raise TusError(507, str(exc)) from exc
            raise
        name = pending.name
        info.done, info.name, info.sha256 = True, name, pending.sha256
        info.expires = time.time() + self.expiry  # how long this record is kept
        info.store = {}
        try:
            self.save(info)
        except BaseException:
            self.storage.delete(name)
            raise
        if request is not None:
            notify_stored(request, [pending])
        self._after_commit(info)

    def _hash_temp(self, handle: str) -> Any:
        """sha256 of a temporary file of :attr:`storage`, read once."""
        digest = hashlib.sha256()
        with self.storage.open_temp_read(handle) as f:
            while block := f.read(BLOCK):
                digest.update(block)
        return digest

    def remove(self, upload_id: str) -> None:
        """Terminate an upload by id if it still exists (no error if it is
        gone or busy): the clean-up of a failed creation."""
        try:
            with self.locked(upload_id) as info:
                self.terminate(info)
        except (Busy, Gone):
            pass

    def terminate(self, info: UploadInfo) -> None:
        """Remove an upload (lock held): its state, its bytes, and a stored
        result if it had finished."""
        if info.done and info.name:
            self.storage.delete(info.name)
        self._remove_files(info.id)

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

    def _forget_hash(self, upload_id: str) -> None:
        with self._hash_lock:
            self._hashes.pop(upload_id, None)


def make_tus_store(storage: Storage, values: SessupSettings) -> TusStore:
    """The store ``sessup.upload.storage`` calls for: the upload directory's
    ``.tus``, or the bucket (beside the stored files, under ``<prefix>.tus/``)."""
    from ..uploads.s3 import S3Storage

    if isinstance(storage, S3Storage):
        from .s3store import S3TusStore

        return S3TusStore(storage, values.upload.tus_expiry)
    from .local import LocalTusStore

    return LocalTusStore(storage, values.upload.tus_expiry)


def sweep(root: str, expiry: int, *, now: float | None = None) -> int:
    """Remove the expired tus uploads of the upload directory ``root`` (for
    a cron job or the sweep command); return how many unfinished ones went."""
    from ..uploads.storage import LocalStorage
    from .local import LocalTusStore

    return LocalTusStore(LocalStorage(root), expiry).sweep(now)
