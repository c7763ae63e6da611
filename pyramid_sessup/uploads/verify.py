"""Checks of a file's content before it is stored: its type, and the host's verifiers.

**Content check** (``sessup.upload.content_check``).  A file's type is what its
extension says (:func:`~.names.guess_type`); the allow-lists judge that claim.
This module checks the claim against the first :data:`HEAD_BYTES` of the
file with libmagic (``python-magic`` over Debian's ``libmagic1``), so a
``photo.png`` that is really HTML, a script or an executable is refused
(415, naming the file) before anything is stored.

* Types with magic bytes (images, PDF, archives, audio, video): libmagic's
  answer must be the claimed type, one of its aliases (:data:`ALIASES`), or a
  type whose usual extensions include the file's.
* Text types (``text/*``, JSON, XML, JavaScript; they have no magic bytes)
  are checked explicitly, not waved through: the bytes must be text (no NUL
  or other binary control characters; UTF-16/32 after a byte-order mark must
  decode), and libmagic must not recognise a binary format in them (a
  ``notes.txt`` that starts with ``GIF89a`` is refused).  SVG, which is XML
  but runs script in a browser, must also look like SVG to libmagic.
* Common extensions Python's built-in type table lacks (office documents,
  Markdown, compressed files, some media) get their claim from
  :data:`EXTRA_CLAIMS`.  Any other extension without a known type claims
  nothing, so there is nothing to compare (the file is stored and served as
  ``application/octet-stream``, an attachment); the allow-lists still apply.

The host's own verifiers (``sessup.upload.verifiers``) run after this check
and the virus scan, in :func:`~.pipeline.check_files`.
"""
from __future__ import annotations

import codecs
import logging
import mimetypes
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from ..exceptions import UnsupportedMediaType
from . import names

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import StoredFile
    from .storage import Storage

log = logging.getLogger("pyramid_sessup.uploads")

#: Bytes read from the start of each file.  libmagic finds every format it
#: knows within this (ISO 9660's marker, at 32 KiB, is the deepest common one).
HEAD_BYTES = 64 * 1024

#: What an extension claims where :func:`~.names.guess_type` knows no type.
EXTRA_CLAIMS: dict[str, str] = {
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text", "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "epub": "application/epub+zip", "md": "text/markdown", "markdown": "text/markdown", "log": "text/plain",
    "ini": "text/plain", "yaml": "application/yaml", "yml": "application/yaml", "toml": "application/toml",
    "gz": "application/gzip", "tgz": "application/gzip", "bz2": "application/x-bzip2", "xz": "application/x-xz",
    "7z": "application/x-7z-compressed", "rar": "application/vnd.rar", "flac": "audio/flac", "ogg": "audio/ogg",
    "oga": "audio/ogg", "m4a": "audio/mp4", "webm": "video/webm", "mkv": "video/x-matroska",
}

#: Other names libmagic (or an older libmagic) gives a claimed type.  ZIP-based
#: office formats are reported as plain ZIP when the archive's first entry is
#: not the one libmagic looks for; OLE2 office files as the container type.
ALIASES: dict[str, frozenset[str]] = {
    "image/jpeg": frozenset({"image/pjpeg"}),
    "image/bmp": frozenset({"image/x-ms-bmp"}),
    "image/x-ms-bmp": frozenset({"image/bmp"}),
    "image/vnd.microsoft.icon": frozenset({"image/x-icon"}),
    "image/x-icon": frozenset({"image/vnd.microsoft.icon"}),
    "application/zip": frozenset({"application/x-zip-compressed"}),
    "application/gzip": frozenset({"application/x-gzip"}),
    "application/x-gtar-compressed": frozenset({"application/gzip", "application/x-gzip"}),
    "application/x-gzip": frozenset({"application/gzip"}),
    "audio/x-wav": frozenset({"audio/wav", "audio/vnd.wave"}),
    "audio/wav": frozenset({"audio/x-wav", "audio/vnd.wave"}),
    "audio/mp4": frozenset({"video/mp4", "audio/x-m4a"}),
    "audio/ogg": frozenset({"application/ogg"}),
    "application/vnd.rar": frozenset({"application/x-rar", "application/x-rar-compressed"}),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": frozenset({"application/zip"}),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": frozenset({"application/zip"}),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": frozenset({"application/zip"}),
    "application/vnd.oasis.opendocument.text": frozenset({"application/zip"}),
    "application/vnd.oasis.opendocument.spreadsheet": frozenset({"application/zip"}),
    "application/epub+zip": frozenset({"application/zip"}),
    "application/msword": frozenset({"application/cdfv2", "application/x-ole-storage"}),
    "application/vnd.ms-excel": frozenset({"application/cdfv2", "application/x-ole-storage"}),
    "application/vnd.ms-powerpoint": frozenset({"application/cdfv2", "application/x-ole-storage"}),
}

#: Claimed types that are text although not ``text/*``.
TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/javascript", "application/x-javascript",
    "application/ecmascript", "application/x-sh", "application/x-csh", "application/x-tex",
    "application/x-latex", "application/rtf", "application/x-yaml", "application/yaml", "application/toml",
    "application/x-ndjson", "application/sql", "application/x-subrip", "image/svg+xml", "message/rfc822",
})

#: What libmagic says of content it takes for text (besides ``text/*``).
_TEXTUAL_DETECTIONS = TEXT_TYPES | {"application/x-empty", "application/csv", "message/news",
                                    "application/x-wine-extension-ini"}

#: Control characters that may appear in text: TAB, LF, VT, FF, CR, ESC.
_TEXT_CONTROLS = frozenset(b"\t\n\x0b\x0c\r\x1b")
_BINARY_BYTES = bytes(b for b in range(32) if b not in _TEXT_CONTROLS) + b"\x7f"

_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))

_local = threading.local()


def _magic(formats_only: bool) -> Any:
    # One libmagic handle per thread: a handle is not safe to share, and
    # python-magic's own lock would serialise every upload thread on it.
    name = "formats" if formats_only else "full"
    handle = getattr(_local, name, None)
    if handle is None:
        import magic

        handle = magic.Magic(mime=True)
        if formats_only:
            # Without libmagic's text analysis: UTF-8 text with non-ASCII
            # characters costs it milliseconds per file (measured: 7 ms for 64 KiB),
            # against well under one for the format signatures alone.
            # (libmagic's MAGIC_NO_CHECK_ENCODING, 0x200000, is missing from python-magic's stubs)
            handle.flags |= magic.MAGIC_NO_CHECK_ASCII | getattr(magic, "MAGIC_NO_CHECK_ENCODING", 0x200000)
            magic.magic_setflags(handle.cookie, handle.flags)
        setattr(_local, name, handle)
    return handle


def detect(head: bytes, formats_only: bool = False) -> str:
    """libmagic's media type for ``head`` (lower case, no parameters).  With
    ``formats_only``, only formats with a signature are recognised: text gives
    ``application/octet-stream``."""
    try:
        found = _magic(formats_only).from_buffer(head)
    except Exception as exc:  # python-magic raises MagicException, a plain Exception
        log.warning("libmagic could not identify a file: %s", exc)
        return "application/octet-stream"
    return str(found or "application/octet-stream").split(";")[0].strip().lower()


def is_text_type(media_type: str) -> bool:
    """True for types without magic bytes that must be checked as text."""
    return media_type.startswith("text/") or media_type in TEXT_TYPES or media_type.endswith(("+xml", "+json"))


def _textual_detection(detected: str) -> bool:
    return detected.startswith("text/") or detected in _TEXTUAL_DETECTIONS or detected.endswith(("+xml", "+json"))


def looks_like_text(head: bytes, complete: bool) -> bool:
    """True if ``head`` is text: after a UTF-16/32 byte-order mark, text that
    decodes; otherwise bytes without NUL or other binary control characters
    (UTF-8, ASCII and legacy 8-bit encodings such as a Windows-1252 CSV all
    pass; every binary format has such bytes in its first kilobytes).
    ``complete`` is false when the file goes on past ``head`` (a character
    may then be cut at the end)."""
    for bom, encoding in _BOMS:
        if head.startswith(bom) and encoding != "utf-8-sig":
            decoder = codecs.getincrementaldecoder(encoding)()
            try:
                text = decoder.decode(head, final=complete)
            except UnicodeDecodeError:
                return False
            return not any(ord(ch) < 32 and ord(ch) not in _TEXT_CONTROLS or ord(ch) == 0x7F for ch in text)
    return head.translate(None, _BINARY_BYTES) == head


def content_problem(head: bytes, complete: bool, claimed: str, ext: str) -> str | None:
    """Why ``head`` (the first bytes of a file) is not what ``claimed`` says, or
    ``None`` when it is.  ``ext`` is the file's extension (for libmagic's
    alternative names)."""
    if claimed == "application/octet-stream":
        return None  # claims nothing: nothing to compare
    if is_text_type(claimed):
        if not looks_like_text(head, complete):
            return "is not text"
        detected = detect(head, formats_only=True)
        if detected != "application/octet-stream" and not _textual_detection(detected):
            return f"looks like {detected}"
        if claimed == "image/svg+xml" and detected != "image/svg+xml":
            return "is not an SVG image"
        return None
    detected = detect(head)
    # The system's type table may name a type otherwise than Python's built-in one
    # (.tgz: application/x-gtar-compressed): the extension's own claim counts too.
    extra = EXTRA_CLAIMS.get(ext, claimed)
    if detected in (claimed, extra) or detected in ALIASES.get(claimed, ()) or detected in ALIASES.get(extra, ()):
        return None
    if ext and "." + ext in mimetypes.guess_all_extensions(detected):
        return None
    if detected == "application/x-empty":
        return "is empty"
    return f"looks like {detected}"


def read_head(path: str) -> tuple[bytes, bool]:
    """The first :data:`HEAD_BYTES` of a file, and whether that is all of it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0) as f:
        return read_head_of(f)


def read_head_of(f: BinaryIO) -> tuple[bytes, bool]:
    """:func:`read_head` of an open file (a local file, or an object's body)."""
    head = b""
    while len(head) <= HEAD_BYTES:
        block = f.read(HEAD_BYTES + 1 - len(head))
        if not block:
            break
        head += block
    return head[:HEAD_BYTES], len(head) <= HEAD_BYTES


def content_check_applies(mode: str, allowed_extensions: Sequence[str], allowed_types: Sequence[str]) -> bool:
    """Whether ``sessup.upload.content_check`` (``mode``) checks files here."""
    if mode == "always":
        return True
    if mode == "auto":
        return bool(allowed_extensions or allowed_types)
    return False


def check_content(file: StoredFile, storage: Storage | None = None) -> None:
    """Raise :class:`UnsupportedMediaType` (415, naming the file) unless the
    still-temporary ``file`` is what its extension claims.  ``storage``: where
    the temporary file is (default: ``file.temp_path`` is a local path); an
    object of a bucket is read back from it (its first bytes only)."""
    ext = names.extension_of(file.filename)
    claimed = file.content_type
    if claimed == "application/octet-stream":
        claimed = EXTRA_CLAIMS.get(ext, claimed)
    if claimed == "application/octet-stream":
        return  # claims nothing: nothing to compare
    if storage is None:
        head, complete = read_head(file.temp_path)
    else:
        with storage.open_temp_read(file.temp_path) as f:
            head, complete = read_head_of(f)
    problem = content_problem(head, complete, claimed, ext)
    if problem is not None:
        shown = file.filename or "(unnamed)"
        log.warning("upload refused: %r is named as %s but %s", shown, claimed, problem)
        raise UnsupportedMediaType(f"File {shown!r}: the content {problem}, not {claimed} "
                                   f"as its name says; nothing was stored", code="content_mismatch",
                                   filename=shown)
