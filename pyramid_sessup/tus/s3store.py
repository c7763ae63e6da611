"""Resumable uploads in a bucket (``sessup.upload.storage = s3``), kept the
way tusd's S3 store keeps them, so that any machine can continue an upload
another one started.

Layout under ``sessup.upload.s3.prefix`` (``P``)::

    P.tus/<id>.info        the upload's state: owner (hash of the visitor nonce), length, offset,
                           expiry, metadata, where its bytes are (below), and the lease of the
                           request changing it; JSON, written conditionally (:mod:`.s3records`)
    P.tus/<id>             a multipart upload receiving the bytes in parts of exactly
                           ``sessup.upload.s3.part_size`` (5 MiB at least, S3's minimum part size;
                           equal parts because R2 requires them), created with the first part;
                           once the last byte is in, the whole file (an object)
    P.tus/<id>.part.<tag>  the staging object: the bytes after the last whole part (less than one
                           part), prepended to the next PATCH's body

A PATCH body is streamed: the staging object's bytes, then the body, fill a
buffer of one part; each time it is full it goes up as the next part.  What
remains at the end becomes a new staging object; with the upload's last byte
it becomes the last part instead (or, for a file smaller than one part, the
whole file in one PutObject) and the multipart upload is completed.

Why the offset is *recorded* and not derived: tusd derives it from ListParts
plus the staging object's size.  Here the state lists the parts (number, size,
ETag) and the staging object (tag, size) each PATCH committed, and the offset
is their sum: a PATCH whose ``Upload-Checksum`` does not match, or which
fails, must leave the offset as it was, and S3 cannot remove a part once it
is uploaded.  A part no recorded state lists is never used: the next PATCH
uploads over its number, the completion leaves it out, an abort removes it.
Staging objects get a fresh tag each time, so a crash between writing one and
recording the state leaves the recorded one intact; the old one is removed
once the new state is recorded.

Completion: the finished object ``P.tus/<id>`` is a temporary file of the
storage, checked and committed like any ``/upFile`` result (content check,
virus scan, verifiers; one server-side copy to ``P<name>`` with the file's
metadata); only then is it visible.  Completing a multipart upload consumes
it, so the state is first marked ``assembling``.  If the commit then fails for
a passing reason (scanner down, storage unavailable), or the process dies
before the state records the result, the upload is *reopened*: a new
multipart upload gets the recorded parts back by UploadPartCopy from the
finished object, and the upload is again at the offset before its last chunk.

Concatenation (:mod:`.s3join`): a final upload joins its finished partials
(objects ``P.tus/<id>``) by UploadPartCopy inside the service where it can,
else by streaming them through once.
"""
from __future__ import annotations

import copy
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from ..uploads.s3 import MAX_PARTS, MIN_PART_SIZE, S3Storage, is_missing
from .protocol import CHECKSUM_ALGORITHMS, CHECKSUM_MISMATCH, TusError
from .s3records import LEASE_SECONDS, Lease, LostLease, StateObjects
from .state import ID_PATTERN, AppendResult, Gone, TusStore, UploadInfo, owner_digest

log = logging.getLogger(__name__)

#: Keys of one upload below the prefix: its data (the multipart upload and
#: the finished object), its state, its staging objects.
_KEY = re.compile(r"([A-Za-z0-9_-]{32})(\.info|\.part\.[A-Za-z0-9_-]{12})?")

_DAMAGED = "The upload's data is damaged; start a new upload"
_TAKEN_OVER = "Another request took this upload over; the chunk was not applied"


@dataclass
class Received:
    """Where the bytes of an upload are (``UploadInfo.store`` of this store)."""

    #: Bytes per part (all but the last), fixed with the upload's first part.
    part_size: int
    #: The multipart upload on ``P.tus/<id>``, once a part went up.
    upload: str | None = None
    #: ``[number, size, etag]`` of each recorded part, in order.
    parts: list[list[Any]] = field(default_factory=list)
    #: ``[tag, size]`` of the staging object, if any.
    staging: list[Any] | None = None
    #: ``P.tus/<id>`` holds the whole file (a finished partial upload, or during a completion).
    assembled: bool = False
    #: A completion consumed (or was about to consume) the multipart upload.
    assembling: bool = False
    #: The bytes are lost (a completion's result was never recorded).
    damaged: bool = False

    @classmethod
    def of(cls, info: UploadInfo, part_size: int) -> Received:
        """The state of ``info``; 410 when it is damaged or does not add up."""
        raw = info.store
        try:
            state = cls(part_size=int(raw.get("part_size", part_size)), upload=raw.get("upload"),
                        parts=[[int(n), int(size), str(etag)] for n, size, etag in raw.get("parts", [])],
                        staging=None if raw.get("staging") is None else [str(raw["staging"][0]),
                                                                          int(raw["staging"][1])],
                        assembled=bool(raw.get("assembled")), assembling=bool(raw.get("assembling")),
                        damaged=bool(raw.get("damaged")))
        except (TypeError, ValueError, IndexError, KeyError):
            raise TusError(410, _DAMAGED) from None
        staged = state.staging[1] if state.staging else 0
        if state.damaged or state.part_size < MIN_PART_SIZE or (
                not state.assembled and sum(p[1] for p in state.parts) + staged != info.offset):
            raise TusError(410, _DAMAGED)
        return state

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class S3TusStore(TusStore):
    """The resumable uploads of one bucket (under ``<prefix>.tus/``).

    ``storage``
        The :class:`~pyramid_sessup.uploads.s3.S3Storage` finished files are committed to.

    ``expiry``
        Seconds an unfinished upload lives without a PATCH
        (``sessup.upload.tus_expiry``); each PATCH extends it.

    ``lease_seconds``
        How long a request killed mid-way keeps others off the upload.
        Default: 120.
    """

    storage: S3Storage

    def __init__(self, storage: S3Storage, expiry: int, *, lease_seconds: float = LEASE_SECONDS) -> None:
        if not isinstance(storage, S3Storage):
            raise TypeError("S3TusStore keeps its uploads in a bucket (S3Storage)")
        super().__init__(storage, expiry)
        self.prefix = storage.tus_prefix
        self.states = StateObjects(storage, self.prefix, lease_seconds)
        self._leases: dict[str, Lease] = {}
        self._leases_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<S3TusStore s3://{self.storage.bucket}/{self.prefix}>"

    # -- keys and calls ----------------------------------------------------------------------

    def data_key(self, upload_id: str) -> str:
        """The multipart upload's key, and the finished object's."""
        if not ID_PATTERN.fullmatch(upload_id):
            raise ValueError("not an upload id")
        return self.prefix + upload_id

    def _staging_key(self, upload_id: str, tag: str) -> str:
        return f"{self.data_key(upload_id)}.part.{tag}"

    def s3(self, method: str, **params: Any) -> Any:
        """One call to the service (its failures: 503, see :meth:`S3Storage.call`)."""
        storage = self.storage
        operation = "".join(word.title() for word in method.split("_"))
        return storage.call(operation, getattr(storage.client, method), Bucket=storage.bucket, **params)

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3("head_object", Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise
        return True

    # -- state and lease ---------------------------------------------------------------------

    def create(self, *, owner_token: str, length: int | None, **attrs: Any) -> UploadInfo:
        now = time.time()
        while True:
            upload_id = secrets.token_urlsafe(24)
            info = UploadInfo(id=upload_id, owner=owner_digest(owner_token), length=length, offset=0,
                              created=now, expires=now + self.expiry, **attrs)
            try:
                self.states.write(upload_id, asdict(info), new=True)
            except LostLease:  # pragma: no cover - 192 random bits
                continue
            return info

    def load(self, upload_id: str) -> UploadInfo | None:
        if not isinstance(upload_id, str) or not ID_PATTERN.fullmatch(upload_id):
            return None
        got = self.states.read(upload_id)
        info = None if got is None else UploadInfo.from_json(got[0])
        return info if info is not None and info.id == upload_id else None

    def save(self, info: UploadInfo) -> None:
        """Record ``info``: conditionally, keeping the lease, when this process
        holds it; outside a lock (tools, tests) the state is simply replaced."""
        data = asdict(info)
        lease = self._lease(info.id)
        if lease is None:
            self.states.write(info.id, data)
            return
        previous = lease.saved
        try:
            self.states.record(info.id, lease, data)
        except LostLease:
            raise TusError(409, "Another request took this upload over; nothing was recorded") from None
        before, after = previous.get("store", {}).get("staging"), info.store.get("staging")
        if before and before != after:
            self._delete(self._staging_key(info.id, before[0]))  # recorded nowhere any more

    @contextmanager
    def locked(self, upload_id: str) -> Iterator[UploadInfo]:
        if not isinstance(upload_id, str) or not ID_PATTERN.fullmatch(upload_id):
            raise Gone()
        lease = self.states.acquire(upload_id)
        try:
            info = UploadInfo.from_json(copy.deepcopy(lease.saved))
            if info is None or info.id != upload_id:
                raise Gone()
            with self._leases_lock:
                self._leases[upload_id] = lease
            try:
                if info.store.get("assembling"):
                    info = self._recover(info, lease)
                yield info
            finally:
                with self._leases_lock:
                    self._leases.pop(upload_id, None)
        finally:
            self.states.release(upload_id, lease)

    def _lease(self, upload_id: str) -> Lease | None:
        with self._leases_lock:
            return self._leases.get(upload_id)

    def _held(self, upload_id: str) -> Lease:
        lease = self._lease(upload_id)
        if lease is None:
            raise RuntimeError("the upload's lock is not held")
        return lease

    def _renew(self, upload_id: str, lease: Lease) -> None:
        try:
            self.states.renew(upload_id, lease)
        except (LostLease, Gone):
            raise TusError(409, _TAKEN_OVER) from None

    def _record_store(self, upload_id: str, lease: Lease, state: Received) -> None:
        """Record the last saved state with ``state`` as where its bytes are."""
        data = copy.deepcopy(lease.saved)
        data["store"] = state.to_json()
        self.states.record(upload_id, lease, data)

    # -- receiving -------------------------------------------------------------------------------

    def append(self, info: UploadInfo, chunks: Iterator[bytes], *,
               checksum: tuple[str, bytes] | None = None) -> AppendResult:
        """See :meth:`TusStore.append`: parts of ``part_size`` go up as the
        body arrives; the rest becomes the new staging object, or, with the
        upload's last byte, the end of the finished object."""
        lease = self._held(info.id)
        state = Received.of(info, self.storage.part_size)
        start = info.offset
        verify = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
        running = self._take_hash(info.id, start)
        buffer = bytearray(self._read_staging(info.id, state.staging) if state.staging else b"")
        begun_with = state.upload
        first = state.parts[-1][0] + 1 if state.parts else 1
        new_parts: list[list[Any]] = []
        written = 0
        truncated = False
        try:
            try:
                for block in chunks:
                    buffer += block
                    written += len(block)
                    if verify is not None:
                        verify.update(block)
                    if running is not None:
                        running.update(block)
                    while len(buffer) >= state.part_size:
                        new_parts.append(self._send_part(info.id, lease, state, first + len(new_parts), buffer,
                                                         state.part_size))
                        del buffer[:state.part_size]
            except ConnectionError:
                truncated = True
                if verify is not None:
                    raise TusError(400, "The request body ended early; the chunk was discarded") from None
            if checksum is not None and verify is not None and not hmac.compare_digest(verify.digest(), checksum[1]):
                raise TusError(CHECKSUM_MISMATCH, f"{checksum[0]} checksum mismatch; the chunk was not applied")
            state.parts.extend(new_parts)
            if info.length is not None and start + written == info.length:
                self._assemble(info.id, lease, state, buffer)
            elif written:
                state.staging = self._put_staging(info.id, buffer) if buffer else None
        except BaseException:
            if state.upload is not None and state.upload != begun_with:
                self.storage.abort_upload(self.data_key(info.id), state.upload)  # begun here, recorded nowhere
            raise
        info.offset = start + written
        info.store = state.to_json()
        if running is not None:
            self._put_hash(info.id, info.offset, running)
        return AppendResult(written, truncated)

    def _send_part(self, upload_id: str, lease: Lease, state: Received, number: int, buffer: bytearray,
                   size: int) -> list[Any]:
        """Upload ``buffer[:size]`` as part ``number`` (creating the multipart
        upload with the first part); return its ``[number, size, etag]``."""
        from botocore.exceptions import ClientError

        if number > MAX_PARTS:
            raise TusError(507, "The upload needs more than 10,000 parts: raise sessup.upload.s3.part_size")
        self._renew(upload_id, lease)  # never send a part under a lease that may have passed on
        key = self.data_key(upload_id)
        if state.upload is None:
            state.upload = self.s3("create_multipart_upload", Key=key)["UploadId"]
        with memoryview(buffer) as view:
            body = bytes(view[:size])
        try:
            answer = self.s3("upload_part", Key=key, UploadId=state.upload, PartNumber=number, Body=body)
        except ClientError as exc:
            if is_missing(exc):
                raise TusError(410, _DAMAGED) from None
            raise
        return [number, size, str(answer["ETag"])]

    def _read_staging(self, upload_id: str, staging: list[Any]) -> bytes:
        from botocore.exceptions import ClientError

        tag, size = staging
        try:
            answer = self.s3("get_object", Key=self._staging_key(upload_id, tag))
        except ClientError as exc:
            if is_missing(exc):
                raise TusError(410, _DAMAGED) from None
            raise
        body = answer["Body"]
        try:
            data = bytes(body.read(size + 1))
        finally:
            body.close()
        if len(data) != size:
            raise TusError(410, _DAMAGED)
        return data

    def _put_staging(self, upload_id: str, buffer: bytearray) -> list[Any]:
        tag = secrets.token_urlsafe(9)
        self.s3("put_object", Key=self._staging_key(upload_id, tag), Body=bytes(buffer))
        return [tag, len(buffer)]

    def _delete(self, key: str) -> None:
        """Remove an object that nothing refers to any more (a failure is only logged)."""
        try:
            self.storage.client.delete_object(Bucket=self.storage.bucket, Key=key)
        except Exception as exc:
            if not is_missing(exc):
                log.warning("object storage: could not remove %s (removed with its upload): %s", key, exc)

    # -- completion ------------------------------------------------------------------------------

    def _assemble(self, upload_id: str, lease: Lease, state: Received, tail: bytes | bytearray) -> None:
        """Make ``P.tus/<id>`` the whole file: the recorded parts plus ``tail``
        (completing the multipart upload), or ``tail`` alone in one PutObject
        when no part went up."""
        from botocore.exceptions import ClientError

        key = self.data_key(upload_id)
        if state.upload is None:
            self.s3("put_object", Key=key, Body=bytes(tail))
        else:
            if tail:
                number = state.parts[-1][0] + 1 if state.parts else 1
                state.parts.append(self._send_part(upload_id, lease, state, number, bytearray(tail), len(tail)))
            # Completing consumes the multipart upload: say so first (see _recover).
            marked = copy.deepcopy(lease.saved)
            marked.setdefault("store", {})["assembling"] = True
            try:
                self.states.record(upload_id, lease, marked)
            except (LostLease, Gone):
                raise TusError(409, _TAKEN_OVER) from None
            try:
                self.s3("complete_multipart_upload", Key=key, UploadId=state.upload,
                         MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, _, etag in state.parts]})
            except ClientError as exc:
                if is_missing(exc):
                    raise TusError(410, _DAMAGED) from None
                raise
        state.upload, state.parts, state.staging, state.assembled = None, [], None, True

    def _into_temp(self, info: UploadInfo) -> str:
        """``P.tus/<id>``, assembled now if a PATCH did not already (an empty
        upload, or bytes left in a staging object)."""
        state = Received.of(info, self.storage.part_size)
        if not state.assembled:
            tail = self._read_staging(info.id, state.staging) if state.staging else b""
            self._assemble(info.id, self._held(info.id), state, tail)
            info.store = state.to_json()
        return self.data_key(info.id)

    def _seal_partial(self, info: UploadInfo) -> None:
        self._into_temp(info)  # a final upload copies it from there

    def _restore(self, info: UploadInfo, handle: str) -> None:
        """Reopen the upload at its last recorded state (see the module docstring)."""
        lease = self._held(info.id)
        try:
            if handle:
                state = self._reopen(info.id, lease)
            else:  # pragma: no cover - the storage consumed the object and then failed
                state = Received(part_size=self.storage.part_size, damaged=True)
            self._record_store(info.id, lease, state)
        except Exception as exc:  # the state still says "assembling": the next request retries
            log.warning("resumable upload %s: could not reopen it after a failed commit: %s", info.id, exc)
            return
        if handle:
            self._delete(handle)

    def _reopen(self, upload_id: str, lease: Lease) -> Received:
        """A new multipart upload holding the recorded parts again, copied
        from the finished object (the recorded staging object is still there)."""
        saved = UploadInfo.from_json(copy.deepcopy(lease.saved))
        if saved is None:  # pragma: no cover - it was read as valid when the lock was taken
            raise TusError(410, _DAMAGED)
        state = Received.of(saved, self.storage.part_size)
        state.assembling = state.assembled = False
        state.upload = None
        if not state.parts:
            return state
        key = self.data_key(upload_id)
        upload = self.s3("create_multipart_upload", Key=key)["UploadId"]
        try:
            parts, position = [], 0
            for number, size, _ in state.parts:
                answer = self.s3("upload_part_copy", Key=key, UploadId=upload, PartNumber=number,
                                  CopySource={"Bucket": self.storage.bucket, "Key": key},
                                  CopySourceRange=f"bytes={position}-{position + size - 1}")
                parts.append([number, size, str(answer["CopyPartResult"]["ETag"])])
                position += size
        except BaseException:
            self.storage.abort_upload(key, upload)
            raise
        state.upload, state.parts = upload, parts
        return state

    def _recover(self, info: UploadInfo, lease: Lease) -> UploadInfo:
        """The state says a completion began and never recorded its end (the
        process died, or the reopening failed): reopen the upload from the
        finished object; without one, the multipart upload is either intact
        (the completion never ran) or gone with the bytes (damaged, 410)."""
        key = self.data_key(info.id)
        try:
            reopened = self._exists(key)
            if reopened:
                state = self._reopen(info.id, lease)
            else:
                state = Received.of(info, self.storage.part_size)
                state.assembling = False
                if state.upload is not None and not self._upload_exists(key, state.upload):
                    state.damaged = True
            self._record_store(info.id, lease, state)
        except Exception as exc:  # DELETE and HEAD must still work: the PATCH will answer
            log.warning("resumable upload %s: could not recover an interrupted completion: %s", info.id, exc)
            return info
        if reopened:
            self._delete(key)
        fresh = UploadInfo.from_json(copy.deepcopy(lease.saved))
        return fresh if fresh is not None else info

    def _upload_exists(self, key: str, upload_id: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3("list_parts", Key=key, UploadId=upload_id, MaxParts=1)
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise
        return True

    def _after_commit(self, info: UploadInfo) -> None:
        """Nothing of the upload but its state object stays (it records the result until it expires)."""
        try:
            self._purge(info.id, keep_state=True)
        except Exception as exc:
            log.warning("resumable upload %s: leftovers stay until it expires: %s", info.id, exc)

    # -- concatenation -------------------------------------------------------------------------

    def join(self, final: UploadInfo, partials: Sequence[UploadInfo], checksum: tuple[str, bytes] | None) -> Any:
        """See :meth:`TusStore.join` and :mod:`.s3join`."""
        from .s3join import join

        self._renew(final.id, self._held(final.id))
        return join(self, final, partials, checksum)

    # -- removal -----------------------------------------------------------------------------

    def _remove_files(self, upload_id: str) -> None:
        lease = self._lease(upload_id)
        self.states.delete(upload_id)  # state first: from then on every look-up answers 404
        if lease is not None:
            lease.removed = True
        self._purge(upload_id)
        self._forget_hash(upload_id)

    def _purge(self, upload_id: str, *, keep_state: bool = False) -> None:
        """Abort every multipart upload and remove every object of the upload
        (but its state object when ``keep_state``)."""
        key = self.data_key(upload_id)
        for upload in list(self.storage.list_uploads(key)):
            if upload["Key"] == key:
                self.storage.abort_upload(key, upload["UploadId"])
        for obj in list(self.storage.list_objects(key)):
            if _KEY.fullmatch(obj["Key"][len(self.prefix):]) and not (keep_state and obj["Key"].endswith(".info")):
                self._delete(obj["Key"])

    def sweep(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        activity: dict[str, float] = {}  # upload id -> its latest change
        with_state: set[str] = set()
        for obj in self.storage.list_objects(self.prefix):
            match = _KEY.fullmatch(obj["Key"][len(self.prefix):])
            if match:
                upload_id = match.group(1)
                activity[upload_id] = max(activity.get(upload_id, 0.0), obj["LastModified"].timestamp())
                if match.group(2) == ".info":
                    with_state.add(upload_id)
        for upload in self.storage.list_uploads(self.prefix):
            upload_id = upload["Key"][len(self.prefix):]
            if ID_PATTERN.fullmatch(upload_id):
                activity[upload_id] = max(activity.get(upload_id, 0.0), upload["Initiated"].timestamp())
        for upload_id in sorted(activity):
            info = self.load(upload_id) if upload_id in with_state else None
            if info is None:
                # No (valid) state: leftovers of a crash during creation or removal.
                if activity[upload_id] < now - self.expiry:
                    self._purge(upload_id)
                continue
            if info.expires < now:
                removed += self._expire(upload_id, now)
        return removed
