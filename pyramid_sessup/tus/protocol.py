"""The tus 1.0.0 wire format: versions, extensions, headers and their parsing.

Nothing here touches the disk or the request object; :mod:`.views` feeds it
header values and turns :class:`TusError` into answers.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # pragma: no cover
    from .state import UploadInfo

from ..exceptions import SessupError

TUS_VERSION = "1.0.0"
#: Extensions this server implements (advertised by ``OPTIONS``).
EXTENSIONS = ("creation", "creation-with-upload", "creation-defer-length", "termination", "expiration",
              "checksum", "concatenation")
#: ``Upload-Checksum`` algorithms, by their tus name.
CHECKSUM_ALGORITHMS: Mapping[str, Any] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
#: The media type of every PATCH body.
OFFSET_OCTET_STREAM = "application/offset+octet-stream"
#: Non-standard status of the checksum extension: the chunk did not match.
CHECKSUM_MISMATCH = 460
#: Longest ``Upload-Metadata`` value accepted (it is stored and echoed by HEAD).
MAX_METADATA = 4096

#: Longest URL of one partial upload in ``Upload-Concat: final;...``.
MAX_CONCAT_URL = 2048

_DIGITS = re.compile(r"[0-9]{1,19}")
_META_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class TusError(SessupError):
    """A request the protocol refuses: ``status`` and a message for people."""

    code = "tus_refused"

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, status=status, headers=headers)

    @property
    def status(self) -> int:
        return self.status_code


def parse_length(value: str | None, header: str) -> int:
    """A non-negative decimal header value (``Upload-Length``, ``Upload-Offset``)."""
    if value is None:
        raise TusError(400, f"{header} is required")
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        raise TusError(400, f"{header} must be a non-negative whole number")
    return int(value)


def parse_defer_length(value: str | None) -> bool:
    """``Upload-Defer-Length``: absent, or exactly ``1`` (creation-defer-length)."""
    if value is None:
        return False
    if value.strip() != "1":
        raise TusError(400, "Upload-Defer-Length must be 1")
    return True


@dataclass(frozen=True)
class Concat:
    """An ``Upload-Concat`` header: ``partial``, or ``final`` with the partial
    uploads' URLs in order."""

    final: bool
    urls: tuple[str, ...] = ()


def parse_concat(value: str | None, max_parts: int) -> Concat | None:
    """``Upload-Concat: partial`` or ``Upload-Concat: final;<url> <url> ...``
    (concatenation).  More than ``max_parts`` URLs is 400 before any look-up."""
    if value is None:
        return None
    value = value.strip()
    if value == "partial":
        return Concat(final=False)
    kind, semicolon, rest = value.partition(";")
    if kind.strip() != "final" or not semicolon:
        raise TusError(400, "Upload-Concat must be 'partial' or 'final;<url> <url> ...'")
    if len(rest) > max_parts * (MAX_CONCAT_URL + 1):
        raise TusError(400, f"Upload-Concat names more than sessup.upload.tus_max_parts ({max_parts}) uploads")
    urls = tuple(rest.split())
    if not urls:
        raise TusError(400, "Upload-Concat: final names no partial upload")
    if len(urls) > max_parts:
        raise TusError(400, f"Upload-Concat names {len(urls)} uploads; at most sessup.upload.tus_max_parts "
                       f"({max_parts}) may be joined")
    if any(len(url) > MAX_CONCAT_URL for url in urls):
        raise TusError(400, f"Upload-Concat: a URL is longer than {MAX_CONCAT_URL} characters")
    return Concat(final=True, urls=urls)


def creation_length(length: str | None, defer: str | None, *, final: bool, limit: int) -> int | None:
    """The ``Upload-Length`` of a creation request: ``None`` when deferred
    (``Upload-Defer-Length: 1``) or, for a final upload, when absent (its
    length is the partial uploads' total).  413 over ``limit``."""
    deferred = parse_defer_length(defer)
    if final:
        if deferred:
            raise TusError(400, "A final upload (Upload-Concat: final) cannot defer its length")
        return None if length is None else parse_length(length, "Upload-Length")
    if deferred:
        if length is not None:
            raise TusError(400, "Send Upload-Length or Upload-Defer-Length, not both")
        return None
    value = parse_length(length, "Upload-Length")
    if value > limit:
        raise TusError(413, f"Upload-Length is larger than sessup.upload.max_file_size ({limit} bytes)",
                       {"Tus-Max-Size": str(limit)})
    return value


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (the value
    may be absent).  Values are decoded as UTF-8; anything malformed is 400."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA:
        raise TusError(400, f"Upload-Metadata is longer than {MAX_METADATA} characters")
    result: dict[str, str | None] = {}
    for pair in value.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not parts[0] or not _META_KEY.fullmatch(parts[0]):
            raise TusError(400, "Upload-Metadata must be 'key base64value' pairs separated by commas")
        key = parts[0]
        if key in result:
            raise TusError(400, f"Upload-Metadata repeats the key {key!r}")
        if len(parts) == 1 or parts[1] == "":
            result[key] = None
            continue
        try:
            decoded = base64.b64decode(parts[1], validate=True)
            result[key] = decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            raise TusError(400, f"Upload-Metadata value of {key!r} is not base64 of UTF-8 text") from None
    return result


def parse_checksum(value: str | None) -> tuple[str, bytes] | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``; 400 for an unknown
    algorithm or a malformed value."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise TusError(400, f"Unsupported checksum algorithm {algorithm!r}; use one of "
                       + ", ".join(CHECKSUM_ALGORITHMS),
                       {"Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS)})
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise TusError(400, "Upload-Checksum digest is not base64") from None
    if len(digest) != CHECKSUM_ALGORITHMS[algorithm]().digest_size:
        raise TusError(400, f"Upload-Checksum digest has the wrong length for {algorithm}")
    return algorithm, digest


def check_version(value: str | None) -> None:
    """Every request but ``OPTIONS`` names the protocol version it speaks."""
    if value is None or value.strip() != TUS_VERSION:
        raise TusError(412, f"Tus-Resumable {TUS_VERSION} is required", {"Tus-Version": TUS_VERSION})


def http_date(timestamp: float) -> str:
    """RFC 7231 ``IMF-fixdate``, as ``Upload-Expires`` uses."""
    return formatdate(timestamp, usegmt=True)


def state_headers(info: UploadInfo) -> dict[str, str]:
    """What HEAD (and every answer about an upload) says of its state.

    A deferred length shows as ``Upload-Defer-Length: 1``; partial and final
    uploads carry ``Upload-Concat``.  A final upload not yet assembled (only
    seen after a crash mid-assembly) has no ``Upload-Offset``, as the
    concatenation extension asks.
    """
    headers: dict[str, str] = {}
    if info.concat != "final" or info.done:
        headers["Upload-Offset"] = str(info.offset)
    if info.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(info.length)
    if info.concat == "partial":
        headers["Upload-Concat"] = "partial"
    elif info.concat == "final":
        headers["Upload-Concat"] = "final;" + " ".join(info.parts)
    if not info.done or info.concat == "partial":
        headers["Upload-Expires"] = http_date(info.expires)
    return headers


def discovery_headers(max_size: int) -> dict[str, str]:
    """What ``OPTIONS`` advertises."""
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(max_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
