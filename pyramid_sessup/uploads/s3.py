"""Uploads in a bucket of an S3-compatible service (``sessup.upload.storage = s3``).

Only the plain S3 API is used (PutObject, multipart uploads, CopyObject,
UploadPartCopy, HeadObject, GetObject, DeleteObject, the two listings and
presigned GETs), so AWS S3, MinIO, Ceph RGW and Cloudflare R2 all serve.

Layout under ``sessup.upload.s3.prefix`` (``P``)::

    P<name>       stored files; <name> as for the upload directory; their
                  metadata (original name, type, size, sha256) is the object's
                  own user metadata, so every machine reads it with the file
    P.tmp/<id>    temporary files: being received (a multipart upload) or
                  received and waiting for their checks (an object)
    P.tus/...     resumable (tus) uploads (:mod:`pyramid_sessup.tus.s3store`);
                  a finished one, ``P.tus/<id>``, is a temporary file too

How a file is received, once and in constant memory: the bytes go into a
buffer of ``sessup.upload.s3.part_size``; each time it fills, it is sent as the
next part of a multipart upload on ``P.tmp/<id>`` (created with the first
part).  When the file ends, the tail is the last part and the upload is
completed; a file smaller than one part goes up in a single PutObject.  The
pipeline hashes the bytes as they pass.

Why a temporary object and a copy, and not the final key at once: S3 fixes an
object's metadata when its upload starts, and the sha256 and size are known
only at the end; and the form keeps files across requests before they are
stored.  :meth:`S3Storage.finalize` therefore copies ``P.tmp/<id>`` to
``P<name>`` inside the service (CopyObject, or UploadPartCopy above 5 GiB:
no byte goes through the application again) with the full metadata, then
deletes the temporary object.  The stored object appears at once, whole, with
its metadata.

Anything refused or aborted is removed at once (AbortMultipartUpload,
DeleteObject).  What a killed process leaves (an unfinished multipart upload,
a temporary object) is removed by :meth:`S3Storage.sweep` once it was not
modified for ``sessup.upload.temp_max_age``.
"""
from __future__ import annotations

import io
import json
import logging
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator, cast
from urllib.parse import quote, unquote

from pyramid.exceptions import ConfigurationError

from ..exceptions import StorageUnavailable
from . import names
from .storage import EXT_PATTERN, NAME_PATTERN, TEMP_ID_PATTERN, Storage, _token

if TYPE_CHECKING:
    from ..settings import SessupSettings

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: S3's limits: parts of 5 MiB at least (but the last), 10,000 parts, 5 GiB per
#: part and per CopyObject.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
MAX_COPY_SIZE = 5 * GiB
#: The user-metadata key (``x-amz-meta-sessup``) holding the file's metadata as
#: percent-encoded JSON: S3 metadata must be ASCII, and AWS allows 2 KB in all.
META_KEY = "sessup"
MAX_META_BYTES = 1800
TMP_PREFIX = ".tmp/"
#: Resumable uploads: the sweep here leaves them alone (they expire after
#: ``sessup.upload.tus_expiry``, not ``temp_max_age``).
TUS_PREFIX = ".tus/"
_BLOCK_SIZE = 256 * KiB  # 256 KiB per read of a download
#: Error codes that mean "no such object" (S3 answers HEAD with a bare 404).
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
#: A conditional request lost (If-Match, If-None-Match): the caller decides.
_CONDITIONS = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


def error_code(exc: BaseException | None) -> str:
    """The S3 error code of a client error (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def is_missing(exc: BaseException) -> bool:
    """Whether a client error says the object (or upload) does not exist."""
    return error_code(exc) in _MISSING


def is_conflict(exc: BaseException) -> bool:
    """Whether a client error says a conditional request lost (another writer came first)."""
    return error_code(exc) in _CONDITIONS


def _unavailable(operation: str, exc: BaseException) -> StorageUnavailable:
    """The 503 a client gets when the service fails; the log has the details
    (botocore's messages name the endpoint, bucket and key, never a credential)."""
    log.error("object storage: %s failed: %s", operation, exc)
    code = error_code(exc)
    detail = f" ({code})" if code else ""
    return StorageUnavailable(f"The upload storage did not answer {operation}{detail}; nothing was stored")


def encode_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    """``metadata`` as S3 user metadata (ASCII only, at most :data:`MAX_META_BYTES`)."""
    text = json.dumps(metadata, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    value = quote(text, safe="{}[]\":,.-_ ")
    if len(value) > MAX_META_BYTES:
        raise ValueError("the file's metadata is too large for object metadata")
    return {META_KEY: value}


def decode_metadata(user_metadata: dict[str, str] | None) -> dict[str, Any]:
    """What :func:`encode_metadata` stored, or ``{}``."""
    raw = (user_metadata or {}).get(META_KEY)
    if not raw:
        return {}
    try:
        data = json.loads(unquote(raw, errors="strict"))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def make_client(values: SessupSettings) -> Any:
    """A boto3 S3 client from the ``sessup.upload.s3.*`` settings.

    Request checksums are sent only where S3 requires them: the CRC32 headers
    boto3 adds by default since 1.36 are refused by several S3-compatible
    services.  Signature V4 everywhere (R2 and current AWS regions need it).
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigurationError("sessup.upload.storage = s3 needs boto3: "
                                 "pip install 'pyramid_sessup[s3]'") from None
    up = values.upload
    credentials: dict[str, str] = {}
    if up.s3_access_key_id and up.s3_secret_access_key:
        credentials = {"aws_access_key_id": up.s3_access_key_id,
                       "aws_secret_access_key": up.s3_secret_access_key}
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": up.s3_addressing_style},
        retries={"mode": "standard", "max_attempts": 3},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5,
        read_timeout=60,
        max_pool_connections=32,
    )
    # A session of our own: boto3's default session is not thread-safe to create clients from.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=up.s3_endpoint_url, region_name=up.s3_region,
                          config=config, **credentials)


class S3TempFile:
    """A file being received into ``key``: parts sent as the buffer fills.

    Memory: one buffer of ``part_size`` (plus the block being added), and
    a copy of one part while it is sent.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self.key = key
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._closed = False
        self._stored = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        if self._closed:
            raise ValueError("write to a closed temporary file")
        self._buffer += data
        self.size += len(data)
        try:
            while len(self._buffer) >= self.storage.part_size:
                self._send_part(self.storage.part_size)
        except BaseException:
            self.abort()
            raise
        return len(data)

    def _send_part(self, size: int) -> None:
        """Send the buffer's first ``size`` bytes as the next part.  Every part
        but the last has exactly ``part_size`` bytes: R2 requires equal parts."""
        storage = self.storage
        if self._upload_id is None:
            answer = storage.call("CreateMultipartUpload", storage.client.create_multipart_upload,
                                  Bucket=storage.bucket, Key=self.key)
            self._upload_id = answer["UploadId"]
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise StorageUnavailable("The file needs more than 10,000 parts: raise sessup.upload.s3.part_size")
        with memoryview(self._buffer) as view:
            body = bytes(view[:size])
        answer = storage.call("UploadPart", storage.client.upload_part, Bucket=storage.bucket, Key=self.key,
                              UploadId=self._upload_id, PartNumber=number, Body=body)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        del self._buffer[:size]

    def close(self) -> None:
        if self._closed:
            return
        storage = self.storage
        try:
            if self._upload_id is None:
                storage.call("PutObject", storage.client.put_object, Bucket=storage.bucket, Key=self.key,
                             Body=self._buffer)
            else:
                if self._buffer:
                    self._send_part(len(self._buffer))
                storage.call("CompleteMultipartUpload", storage.client.complete_multipart_upload,
                             Bucket=storage.bucket, Key=self.key, UploadId=self._upload_id,
                             MultipartUpload={"Parts": self._parts})
        except BaseException:
            self.abort()
            raise
        self._closed = self._stored = True
        self._buffer = bytearray()

    def abort(self) -> None:
        self._closed = True
        self._buffer = bytearray()
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            self.storage.abort_upload(self.key, upload_id)
        if self._stored:
            self._stored = False
            self.storage.discard(self.key)

    def __enter__(self) -> S3TempFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


class S3Download:
    """A stored object opened for a download: one HeadObject now, and a
    GetObject (of the asked range) only when the body is sent, so HEAD and
    304 answers cost one request."""

    def __init__(self, storage: S3Storage, key: str, head: dict[str, Any]) -> None:
        self.storage = storage
        self.key = key
        self.size = int(head["ContentLength"])
        self.modified = head["LastModified"].timestamp()
        self.etag = str(head.get("ETag", ""))
        self.metadata = decode_metadata(head.get("Metadata"))
        self._body: Any = None

    def iter_range(self, start: int | None = None, stop: int | None = None) -> Iterator[bytes]:
        storage = self.storage
        params: dict[str, Any] = {"Bucket": storage.bucket, "Key": self.key}
        if self.etag:
            params["IfMatch"] = self.etag  # exactly the object the headers described
        if start or stop is not None:
            last = "" if stop is None else str(stop - 1)
            params["Range"] = f"bytes={start or 0}-{last}"
        try:
            answer = storage.call("GetObject", storage.client.get_object, **params)
            self._body = answer["Body"]
            yield from self._body.iter_chunks(_BLOCK_SIZE)
        finally:
            self.close()

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()


class _BodyReader(io.RawIOBase):
    """A GetObject body as a readable, closable file object."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.body.close()
        super().close()


class S3Storage(Storage):
    """Uploaded files in one bucket of an S3-compatible service.

    ``client``
        A boto3 S3 client (:func:`make_client`); shared by every thread.
    ``bucket``, ``prefix``
        Where the objects go; ``prefix`` is empty or ends with ``/``.
    ``part_size``
        Bytes per part of a multipart upload (at least 5 MiB).
    ``url_expiry``
        Seconds a presigned download URL is valid.
    """

    #: Objects up to this size are copied with one CopyObject; larger ones part by part.
    copy_limit = MAX_COPY_SIZE

    @classmethod
    def from_settings(cls, values: SessupSettings) -> S3Storage:
        up = values.upload
        if not up.s3_bucket:
            raise ConfigurationError("sessup.upload.storage = s3 requires sessup.upload.s3.bucket")
        return cls(make_client(values), up.s3_bucket, up.s3_prefix, part_size=up.s3_part_size,
                   url_expiry=up.s3_url_expiry)

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, part_size: int = 8 * MiB,
                 url_expiry: int = 60) -> None:
        if prefix and not prefix.endswith("/"):
            raise ValueError("the key prefix must be empty or end with '/'")
        if part_size < MIN_PART_SIZE:
            raise ValueError("parts must be at least 5 MiB")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.tmp_prefix = prefix + TMP_PREFIX
        self.tus_prefix = prefix + TUS_PREFIX
        self.part_size = part_size
        self.url_expiry = url_expiry

    def __repr__(self) -> str:
        return f"<S3Storage s3://{self.bucket}/{self.prefix}>"

    # -- calls ---------------------------------------------------------------------------

    def call(self, operation: str, method: Callable[..., Any], **params: Any) -> Any:
        """``method(**params)``; a service failure becomes :class:`StorageUnavailable`
        (a missing object stays a ``ClientError``: see :func:`is_missing`)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return method(**params)
        except ClientError as exc:
            if is_missing(exc) or error_code(exc) in _CONDITIONS:
                raise
            raise _unavailable(operation, exc) from exc
        except BotoCoreError as exc:
            raise _unavailable(operation, exc) from exc

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = self.call("HeadObject", self.client.head_object, Bucket=self.bucket, Key=key)
            return head
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; a failure is logged (the sweep retries), never raised."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            if not is_missing(exc):
                log.warning("object storage: could not abort the upload of %s (the sweep will): %s", key, exc)

    # -- temporary files ---------------------------------------------------------------------

    def open_temp(self) -> tuple[S3TempFile, str]:
        key = self.tmp_prefix + _token()
        return S3TempFile(self, key), key

    def _check_temp(self, handle: str, *, resumable: bool = True) -> str:
        """The id of a temporary object: ``P.tmp/<id>`` or, unless
        ``resumable`` is false, a finished resumable upload ``P.tus/<id>``."""
        prefixes = (self.tmp_prefix, self.tus_prefix) if resumable else (self.tmp_prefix,)
        for prefix in prefixes:
            if isinstance(handle, str) and handle.startswith(prefix) \
                    and TEMP_ID_PATTERN.fullmatch(handle[len(prefix):]):
                return handle[len(prefix):]
        raise ValueError("not a temporary file of this storage")

    def temp_id(self, handle: str) -> str:
        return self._check_temp(handle, resumable=False)  # (temp_path_for turns it back into P.tmp/<id>)

    def temp_path_for(self, temp_id: str) -> str | None:
        if not isinstance(temp_id, str) or not TEMP_ID_PATTERN.fullmatch(temp_id):
            return None
        key = self.tmp_prefix + temp_id
        return key if self._head(key) is not None else None

    def discard(self, handle: str) -> None:
        self._check_temp(handle)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=handle)
        except Exception as exc:
            if not is_missing(exc):
                log.warning("object storage: could not remove %s (the sweep will): %s", handle, exc)

    def open_temp_read(self, handle: str) -> BinaryIO:
        """The temporary object's bytes as a stream (one GetObject): the checks
        before :meth:`finalize` read it back from the bucket."""
        from botocore.exceptions import ClientError

        self._check_temp(handle)
        try:
            answer = self.call("GetObject", self.client.get_object, Bucket=self.bucket, Key=handle)
        except ClientError as exc:
            if is_missing(exc):
                raise FileNotFoundError(handle) from None
            raise
        return cast(BinaryIO, _BodyReader(answer["Body"]))

    # -- stored files ----------------------------------------------------------------------

    def _key_of(self, name: str) -> str | None:
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            return None
        return self.prefix + name

    def finalize(self, handle: str, ext: str = "", *, metadata: dict[str, Any] | None = None) -> str:
        from botocore.exceptions import ClientError

        self._check_temp(handle)
        if ext and not EXT_PATTERN.fullmatch(ext):
            raise ValueError(f"invalid extension {ext!r}")
        name = _token() + ("." + ext if ext else "")
        key = self.prefix + name
        user_metadata = encode_metadata(metadata) if metadata is not None else {}
        content_type, inline = names.served_type(name)
        filename = (metadata or {}).get("filename")
        # The object's own headers, should anyone reach it without our download
        # view: the served type and, except for inline-safe types, an attachment.
        disposition = names.content_disposition(
            "inline" if inline else "attachment",
            names.sanitize_filename(filename if isinstance(filename, str) else "") or name)
        extra = {"Metadata": user_metadata, "ContentType": content_type, "ContentDisposition": disposition}
        size = (metadata or {}).get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            head = self._head(handle)
            if head is None:
                raise FileNotFoundError(handle)
            size = int(head["ContentLength"])
        try:
            if size <= self.copy_limit:
                self.call("CopyObject", self.client.copy_object, Bucket=self.bucket, Key=key,
                          CopySource={"Bucket": self.bucket, "Key": handle}, MetadataDirective="REPLACE",
                          **extra)
            else:
                self._copy_in_parts(handle, key, size, extra)
        except ClientError as exc:
            if is_missing(exc):
                raise FileNotFoundError(handle) from None
            raise
        self.discard(handle)
        return name

    def _copy_in_parts(self, source: str, key: str, size: int, extra: dict[str, Any]) -> None:
        """UploadPartCopy for objects over :attr:`copy_limit` (CopyObject stops at 5 GiB)."""
        part = max(self.part_size, -(-size // MAX_PARTS))
        answer = self.call("CreateMultipartUpload", self.client.create_multipart_upload,
                           Bucket=self.bucket, Key=key, **extra)
        upload_id = answer["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, part), 1):
                stop = min(start + part, size) - 1
                copied = self.call("UploadPartCopy", self.client.upload_part_copy, Bucket=self.bucket, Key=key,
                                   UploadId=upload_id, PartNumber=number,
                                   CopySource={"Bucket": self.bucket, "Key": source},
                                   CopySourceRange=f"bytes={start}-{stop}")
                parts.append({"PartNumber": number, "ETag": copied["CopyPartResult"]["ETag"]})
            self.call("CompleteMultipartUpload", self.client.complete_multipart_upload, Bucket=self.bucket,
                      Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort_upload(key, upload_id)
            raise

    def open_download(self, name: str) -> S3Download | None:
        key = self._key_of(name)
        if key is None:
            return None
        head = self._head(key)
        return None if head is None else S3Download(self, key, head)

    def metadata(self, name: str) -> dict[str, Any] | None:
        key = self._key_of(name)
        head = None if key is None else self._head(key)
        if head is None or META_KEY not in (head.get("Metadata") or {}):
            return None
        return decode_metadata(head.get("Metadata"))

    def delete(self, name: str) -> bool:
        key = self._key_of(name)
        if key is None or self._head(key) is None:
            return False
        self.call("DeleteObject", self.client.delete_object, Bucket=self.bucket, Key=key)
        return True

    def presigned_download(self, name: str, *, content_type: str, disposition: str,
                           cache_control: str = "private, no-cache") -> str:
        """A GET URL of the bucket valid for ``url_expiry`` seconds, whose answer
        carries ``content_type`` and ``disposition`` (signed into the URL)."""
        key = self._key_of(name)
        if key is None:
            raise ValueError("not a stored file name")
        return str(self.client.generate_presigned_url("get_object", ExpiresIn=self.url_expiry, Params={
            "Bucket": self.bucket, "Key": key, "ResponseContentType": content_type,
            "ResponseContentDisposition": disposition, "ResponseCacheControl": cache_control}))

    # -- housekeeping ----------------------------------------------------------------------

    def _pages(self, method: str, **params: Any) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator(method)
        try:
            yield from paginator.paginate(Bucket=self.bucket, **params)
        except Exception as exc:
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, (BotoCoreError, ClientError)):
                raise _unavailable(method, exc) from exc
            raise

    def _uploads(self) -> Iterator[dict[str, Any]]:
        """Unfinished multipart uploads of ours: temporary keys, and stored
        names (a large copy cut short)."""
        for page in self._pages("list_multipart_uploads", Prefix=self.prefix):
            for upload in page.get("Uploads", ()):
                rest = upload["Key"][len(self.prefix):]
                if rest.startswith(TMP_PREFIX):
                    ours = TEMP_ID_PATTERN.fullmatch(rest[len(TMP_PREFIX):])
                else:
                    ours = NAME_PATTERN.fullmatch(rest)
                if ours:
                    yield upload

    def list_objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under ``prefix`` (``Key``, ``Size``, ``LastModified``)."""
        for page in self._pages("list_objects_v2", Prefix=prefix):
            yield from page.get("Contents", ())

    def list_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every unfinished multipart upload under ``prefix`` (``Key``, ``UploadId``, ``Initiated``)."""
        for page in self._pages("list_multipart_uploads", Prefix=prefix):
            yield from page.get("Uploads", ())

    def _temp_objects(self) -> Iterator[dict[str, Any]]:
        for page in self._pages("list_objects_v2", Prefix=self.tmp_prefix):
            for obj in page.get("Contents", ()):
                if TEMP_ID_PATTERN.fullmatch(obj["Key"][len(self.tmp_prefix):]):
                    yield obj

    def temp_files(self) -> list[str]:
        keys = {u["Key"] for u in self._uploads() if u["Key"].startswith(self.tmp_prefix)}
        keys.update(o["Key"] for o in self._temp_objects())
        return sorted(keys)

    def unfinished_uploads(self) -> list[tuple[str, str]]:
        """``(key, upload id)`` of every unfinished multipart upload of ours."""
        return sorted((u["Key"], u["UploadId"]) for u in self._uploads())

    def _last_activity(self, upload: dict[str, Any]) -> float:
        """When an unfinished upload last changed: its newest part, else its start."""
        latest = upload["Initiated"].timestamp()
        try:
            for page in self._pages("list_parts", Key=upload["Key"], UploadId=upload["UploadId"]):
                for part in page.get("Parts", ()):
                    latest = max(latest, part["LastModified"].timestamp())
        except StorageUnavailable:
            return time.time()  # unknown: keep it this time
        return latest

    def sweep(self, max_age: float, *, now: float | None = None) -> int:
        """Abort multipart uploads and remove temporary objects not modified for
        ``max_age`` seconds; return how many went.

        Uploads still being received send a part every ``part_size`` bytes, so
        they stay recent; a client slower than one part per ``max_age`` loses
        its upload, as with the upload directory.
        """
        cutoff = (time.time() if now is None else now) - max_age
        removed = 0
        for upload in list(self._uploads()):
            if self._last_activity(upload) < cutoff:
                self.abort_upload(upload["Key"], upload["UploadId"])
                removed += 1
        for obj in list(self._temp_objects()):
            if obj["LastModified"].timestamp() < cutoff:
                self.discard(obj["Key"])
                removed += 1
        return removed
