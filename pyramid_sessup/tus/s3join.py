"""Concatenation in a bucket: a final upload joins finished partial uploads
(each a finished object ``P.tus/<id>``) into its own ``P.tus/<id>``.

Inside the service when it can: one UploadPartCopy per partial, when every
partial but the last has at least 5 MiB (S3's smallest part) and none more
than 5 GiB (its largest), and the service takes such parts.  R2 refuses parts
of unequal sizes (``InvalidPart``), and a service may have no UploadPartCopy
at all: then, as when a partial is small, the partials are streamed through
the application once, into parts of ``sessup.upload.s3.part_size``.  Either
way the joined object is read once for its sha256 (the streamed one while it
passes) and the whole file's ``Upload-Checksum``.

:mod:`.concat` decides what may be joined and cleans up after a refusal;
here a refusal leaves no multipart upload behind.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Iterator

from ..exceptions import StorageUnavailable
from ..uploads.s3 import MAX_COPY_SIZE, MAX_PARTS, MIN_PART_SIZE, S3TempFile, error_code, is_missing
from .protocol import CHECKSUM_ALGORITHMS, CHECKSUM_MISMATCH, TusError
from .state import BLOCK, UploadInfo

if TYPE_CHECKING:  # pragma: no cover
    from .s3store import S3TusStore

log = logging.getLogger(__name__)

#: Codes with which a service refuses the parts of a join by copies.
PARTS_REFUSED = frozenset({"EntityTooSmall", "InvalidPart", "InvalidRequest", "NotImplemented"})


def join(store: S3TusStore, final: UploadInfo, partials: Sequence[UploadInfo],
         checksum: tuple[str, bytes] | None) -> Any:
    """Make the partials' bytes, in order, ``final``'s finished object (both
    locks held); return their sha256 object (see :meth:`.TusStore.join`)."""
    from .s3store import Received

    sources: list[tuple[str, int]] = []
    for part in partials:
        size = part.length or 0
        key = store.data_key(part.id)
        try:
            whole = Received.of(part, store.storage.part_size).assembled and (size == 0 or _size(store, key) == size)
        except TusError:
            whole = False
        if not whole:
            raise TusError(410, f"The data of the partial upload {part.id} is damaged; upload it again")
        if size:
            sources.append((key, size))
    target = store.data_key(final.id)
    if sources and copyable([size for _, size in sources]) and _join_by_copy(store, target, sources):
        sha256, verify = _hash_object(store, target, checksum)
    else:
        sha256, verify = _join_by_streaming(store, target, sources, checksum)
    final.store = Received(part_size=store.storage.part_size, assembled=True).to_json()
    if checksum is not None and verify is not None and not hmac.compare_digest(verify.digest(), checksum[1]):
        raise TusError(CHECKSUM_MISMATCH, f"{checksum[0]} checksum of the joined upload does not match; "
                       "nothing was stored, the partial uploads are kept")
    return sha256


def copyable(sizes: list[int]) -> bool:
    """Whether sources of these sizes can each be one part of a multipart upload."""
    return len(sizes) <= MAX_PARTS and all(size <= MAX_COPY_SIZE for size in sizes) \
        and all(size >= MIN_PART_SIZE for size in sizes[:-1])


def _size(store: S3TusStore, key: str) -> int | None:
    from botocore.exceptions import ClientError

    try:
        return int(store.s3("head_object", Key=key)["ContentLength"])
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise


def _join_by_copy(store: S3TusStore, target: str, sources: list[tuple[str, int]]) -> bool:
    """UploadPartCopy, one part per source; False when the service refuses such parts."""
    upload = store.s3("create_multipart_upload", Key=target)["UploadId"]
    try:
        parts = []
        for number, (source, _) in enumerate(sources, 1):
            answer = store.s3("upload_part_copy", Key=target, UploadId=upload, PartNumber=number,
                              CopySource={"Bucket": store.storage.bucket, "Key": source})
            parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
        store.s3("complete_multipart_upload", Key=target, UploadId=upload, MultipartUpload={"Parts": parts})
    except StorageUnavailable as exc:
        store.storage.abort_upload(target, upload)
        code = error_code(exc.__cause__)
        if code in PARTS_REFUSED:
            log.info("object storage refused a join by copied parts (%s); streaming it instead", code)
            return False
        raise
    except BaseException:
        store.storage.abort_upload(target, upload)
        raise
    return True


def _join_by_streaming(store: S3TusStore, target: str, sources: list[tuple[str, int]],
                       checksum: tuple[str, bytes] | None) -> tuple[Any, Any]:
    """Read each source once, hashing it, into ``target``."""
    sha256 = hashlib.sha256()
    verify = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
    out = S3TempFile(store.storage, target)
    try:
        for source, size in sources:
            seen = 0
            for block in _read_object(store, source):
                out.write(block)
                sha256.update(block)
                if verify is not None:
                    verify.update(block)
                seen += len(block)
            if seen != size:
                raise TusError(410, "A partial upload's data ended early; upload it again")
        out.close()
    except BaseException:
        out.abort()
        raise
    return sha256, verify


def _hash_object(store: S3TusStore, key: str, checksum: tuple[str, bytes] | None) -> tuple[Any, Any]:
    sha256 = hashlib.sha256()
    verify = CHECKSUM_ALGORITHMS[checksum[0]]() if checksum else None
    for block in _read_object(store, key):
        sha256.update(block)
        if verify is not None:
            verify.update(block)
    return sha256, verify


def _read_object(store: S3TusStore, key: str) -> Iterator[bytes]:
    from botocore.exceptions import ClientError

    try:
        body = store.s3("get_object", Key=key)["Body"]
    except ClientError as exc:
        if is_missing(exc):
            raise TusError(410, "A partial upload's data is gone; upload it again") from None
        raise
    try:
        yield from body.iter_chunks(BLOCK)
    finally:
        body.close()
