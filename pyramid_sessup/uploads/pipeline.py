"""The one streaming upload pipeline (``/upFile`` and the forms use it).

:func:`receive_upload` reads the request body in large chunks, feeds them to
``multipart``'s push parser and writes each file part straight into a
temporary file of the upload directory, hashing it on the way.  Nothing is
buffered beyond one chunk, and ``request.POST`` is never touched (WebOb would
copy and re-parse the whole body).  Every ``sessup.upload.*`` limit is checked
while the bytes arrive, so an oversized file is refused at the first byte over.

The result, :class:`ParsedUpload`, holds temporary files until
:meth:`ParsedUpload.commit` gives them their final names.  On any failure
(malformed body, a limit, CSRF, client gone, disk full) every temporary file
of the request is removed and every descriptor closed before the error
propagates.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Collection, Iterator

from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser
from pyramid.request import Request

from ..csrf import CSRF_FIELD, CSRF_HEADER, check_origin, check_token
from ..exceptions import InsufficientStorage, MalformedMultipart, UnsupportedMediaType, UploadTooLarge
from ..settings import SessupSettings
from . import names
from .body import ShortBody, body_length, iter_body
from .storage import Storage, TempFile, storage_error_message, upload_storage

log = logging.getLogger("pyramid_sessup.uploads")

#: ``file_fields`` value that accepts a file in any field.
ANY_FIELD = "*"


#: RFC 2046: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70



def _raise_storage_error(exc: BaseException) -> None:
    """Re-raise an upload-directory failure (full, read-only) as a clear 507."""
    message = storage_error_message(exc)
    if message is not None:
        log.error("upload refused: %s (%s)", message, exc)
        raise InsufficientStorage(message) from exc


@dataclass(frozen=True)
class UploadLimits:
    """The ``sessup.upload.*`` limits one upload is held to."""

    max_file_size: int
    max_total_size: int
    max_files: int
    max_fields: int
    max_field_size: int
    max_header_size: int
    allowed_extensions: tuple[str, ...] = ()
    allowed_types: tuple[str, ...] = ()
    chunk_size: int = 1024 * 1024

    @classmethod
    def from_values(cls, values: SessupSettings, **overrides: Any) -> "UploadLimits":
        """Limits from parsed settings (``registry.sessup_settings``)."""
        kwargs = {name: getattr(values.upload, name) for name in cls.__dataclass_fields__}
        kwargs.update(overrides)
        return cls(**kwargs)


@dataclass
class StoredFile:
    """One file of an upload.  ``name`` is empty until the upload is committed."""

    field: str
    #: Sanitised display name (metadata only; never a path).
    filename: str
    #: Media type the server derives from the extension (never the client's claim).
    content_type: str
    size: int
    sha256: str
    #: Final stored name (relative to the upload directory) after commit.
    name: str = ""
    #: Handle of the temporary file until commit (a path, or an object key).
    temp_path: str = ""
    #: The type the client claimed in the part header (informational).
    client_content_type: str = ""
    #: Extension the stored file gets ("" for none).
    extension: str = ""

    def metadata(self) -> dict[str, Any]:
        """What the storage keeps beside the stored file."""
        return {"filename": self.filename, "content_type": self.content_type, "size": self.size,
                "sha256": self.sha256, "field": self.field}


@dataclass
class ParsedUpload:
    """Files (in temporary files until :meth:`commit`) and text fields of one request."""

    storage: Storage
    files: list[StoredFile] = dc_field(default_factory=list)
    fields: list[tuple[str, str]] = dc_field(default_factory=list)
    committed: bool = False

    def get(self, name: str, default: str | None = None) -> str | None:
        """The last value of text field ``name``."""
        for key, value in reversed(self.fields):
            if key == name:
                return value
        return default

    def getall(self, name: str) -> list[str]:
        """All values of text field ``name``, in order."""
        return [value for key, value in self.fields if key == name]

    def files_of(self, field: str) -> list[StoredFile]:
        """The files sent in ``field``, in order."""
        return [f for f in self.files if f.field == field]

    def commit(self) -> list[StoredFile]:
        """Give every file its final name (atomic rename, never overwriting).

        If any rename fails, the files already committed and all temporary
        files are removed and the error propagates: all or nothing.
        """
        if self.committed:
            return self.files
        done: list[StoredFile] = []
        try:
            for f in self.files:
                f.name = self.storage.finalize(f.temp_path, f.extension, metadata=f.metadata())
                f.temp_path = ""
                done.append(f)
        except BaseException as exc:
            for f in done:
                self.storage.delete(f.name)
                f.name = ""
            self.discard()
            _raise_storage_error(exc)
            raise
        self.committed = True
        return self.files

    def discard(self) -> None:
        """Remove every temporary file not yet committed."""
        for f in self.files:
            if f.temp_path:
                self.storage.discard(f.temp_path)
                f.temp_path = ""


def get_storage(request: Request) -> Storage:
    """The :class:`~.storage.Storage` of the application (created on first use)."""
    return upload_storage(request.registry)


def multipart_boundary(content_type: str | None) -> str:
    """The boundary of a ``multipart/form-data`` ``Content-Type``.

    Raises :class:`UnsupportedMediaType` (415) for any other type and
    :class:`MalformedMultipart` (400) for a missing or invalid boundary.
    """
    main, params = names.parse_header_params(content_type or "")
    if main != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Expected a multipart/form-data body, got {main or 'no Content-Type'}")
    boundary = next((value for key, value in params if key == "boundary"), None)
    if not boundary:
        raise MalformedMultipart("The multipart Content-Type has no boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise MalformedMultipart(f"The multipart boundary is longer than {MAX_BOUNDARY} characters")
    if not all(32 <= ord(ch) < 127 for ch in boundary) or boundary.endswith(" "):
        raise MalformedMultipart("The multipart boundary contains invalid characters")
    return boundary


def _body_chunks(request: Request, chunk_size: int) -> Iterator[bytes]:
    """Read the body in ``chunk_size`` pieces; honour ``CONTENT_LENGTH``.

    A short read (the client went away, or sent less than it announced) is a
    truncated body: 400.
    """
    try:
        length = body_length(request.environ)
    except ValueError:
        raise MalformedMultipart("Invalid Content-Length") from None
    try:
        yield from iter_body(request.environ, length, chunk_size)
    except ShortBody as exc:
        if exc.disconnected:
            raise MalformedMultipart("The request body could not be read (client disconnected)") from exc
        raise MalformedMultipart("The request body is shorter than its Content-Length") from None


def _write_all(f: TempFile, data: bytes) -> None:
    written = f.write(data)
    if written is not None and written < len(data):  # partial write: finish it without copying
        view = memoryview(data)[written:]
        while view:
            written = f.write(view) or 0
            view = view[written:]


class _Receiver:
    """State of one upload while it streams; owns the open temporary file."""

    def __init__(self, storage: Storage, limits: UploadLimits, file_fields: Collection[str]) -> None:
        self.storage = storage
        self.limits = limits
        self.any_field = ANY_FIELD in file_fields
        self.file_fields = file_fields
        self.result = ParsedUpload(storage)
        self.total = 0
        self.file_parts = 0
        # current part
        self.out: TempFile | None = None
        self.current: StoredFile | None = None
        self.hasher: Any = None
        self.field_name: str | None = None
        self.field_data: list[bytes] = []
        self.field_size = 0

    # -- events ------------------------------------------------------------------------

    def start(self, segment: MultipartSegment) -> None:
        limits = self.limits
        header_bytes = sum(len(k) + len(v) + 4 for k, v in segment.headerlist)
        if header_bytes > limits.max_header_size:
            raise UploadTooLarge(f"A part header is larger than sessup.upload.max_header_size "
                                 f"({limits.max_header_size} bytes)")
        field = names.recover_utf8(segment.name or "")
        filename_star = None
        if segment.filename is None:
            _, params = names.parse_header_params(segment.header("Content-Disposition", ""))
            filename_star = next((v for k, v in params if k == "filename*"), None)
        if segment.filename is None and filename_star is None:
            self._start_field(field)
        else:
            raw_name = names.recover_utf8(segment.filename) if segment.filename is not None else None
            self._start_file(field, raw_name, filename_star, segment.content_type or "")

    def _start_field(self, field: str) -> None:
        if len(self.result.fields) >= self.limits.max_fields:
            raise UploadTooLarge(f"Too many form fields: sessup.upload.max_fields is {self.limits.max_fields}")
        self.field_name = field
        self.field_data = []
        self.field_size = 0

    def _start_file(self, field: str, raw_name: str | None, filename_star: str | None,
                    client_type: str) -> None:
        limits = self.limits
        self.file_parts += 1
        if self.file_parts > limits.max_files:
            raise UploadTooLarge(f"Too many files: sessup.upload.max_files is {limits.max_files}")
        if not self.any_field and field not in self.file_fields:
            raise MalformedMultipart(f"Unexpected file field {field!r}")
        if raw_name == "" and filename_star is None:
            # An empty file input: browsers send filename="" and no data. Not a file.
            return
        filename = names.display_name(raw_name, filename_star)
        ext = names.extension_of(filename)
        media_type = names.guess_type(ext)
        shown = filename or "(unnamed)"
        if not names.extension_allowed(ext, limits.allowed_extensions):
            raise UnsupportedMediaType(f"File {shown!r}: extension {ext or '(none)'!r} is not in "
                                       f"sessup.upload.allowed_extensions")
        if not names.type_allowed(media_type, limits.allowed_types):
            raise UnsupportedMediaType(f"File {shown!r}: type {media_type} is not in sessup.upload.allowed_types")
        self.out, temp_path = self.storage.open_temp()
        self.current = StoredFile(field=field, filename=filename, content_type=media_type, size=0, sha256="",
                                  temp_path=temp_path, client_content_type=client_type,
                                  extension=names.stored_extension(ext, limits.allowed_extensions))
        self.result.files.append(self.current)
        self.hasher = hashlib.sha256()

    def data(self, chunk: bytes) -> None:
        current = self.current
        if current is not None:
            size = current.size + len(chunk)
            if size > self.limits.max_file_size:
                raise UploadTooLarge(f"File {current.filename or '(unnamed)'!r} is larger than "
                                     f"sessup.upload.max_file_size ({self.limits.max_file_size} bytes)")
            self.total += len(chunk)
            if self.total > self.limits.max_total_size:
                raise UploadTooLarge(f"The files are larger than sessup.upload.max_total_size "
                                     f"({self.limits.max_total_size} bytes) in total "
                                     f"(at {current.filename or '(unnamed)'!r})")
            current.size = size
            self.hasher.update(chunk)
            _write_all(self.out, chunk)  # type: ignore[arg-type]
        elif self.field_name is not None:
            self.field_size += len(chunk)
            if self.field_size > self.limits.max_field_size:
                raise UploadTooLarge(f"Field {self.field_name!r} is larger than sessup.upload.max_field_size "
                                     f"({self.limits.max_field_size} bytes)")
            self.field_data.append(chunk)
        # else: an empty file input that carries data anyway; dropped

    def end(self) -> None:
        if self.current is not None:
            self.current.sha256 = self.hasher.hexdigest()
            self.close_file()
            self.current = None
        elif self.field_name is not None:
            try:
                value = b"".join(self.field_data).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedMultipart(f"Field {self.field_name!r} is not valid UTF-8") from None
            self.result.fields.append((self.field_name, value))
            self.field_name = None
            self.field_data = []

    def close_file(self) -> None:
        out, self.out = self.out, None
        if out is not None:
            out.close()

    def abort(self) -> None:
        """Close and remove everything this request created."""
        out, self.out = self.out, None
        try:
            if out is not None:
                out.abort()  # a multipart upload is aborted, not completed
                if self.current is not None:
                    self.current.temp_path = ""  # abort removed it
        finally:
            self.result.discard()


def receive_upload(
    request: Request,
    *,
    limits: UploadLimits | SessupSettings | None = None,
    file_fields: Collection[str] | None = None,
    csrf: bool | None = None,
    storage: Storage | None = None,
) -> ParsedUpload:
    """Stream a ``multipart/form-data`` request body into temporary files.

    ``limits``
        :class:`UploadLimits`, or the parsed settings (:class:`SessupSettings`) to build them from.
        Default: the application's ``sessup.upload.*`` settings.

    ``file_fields``
        Names of the fields that may carry files; ``{"*"}`` (:data:`ANY_FIELD`)
        accepts any.  A file in another field is refused (400).
        Default: ``{sessup.upload.field}``.

    ``csrf``
        Require a CSRF token: the ``X-CSRF-Token`` header (checked before the
        body is read) or, without the header, a ``csrf_token`` text field
        (checked after parsing, before returning).  A failure raises
        :class:`~pyramid_sessup.exceptions.CSRFRefused` (403).
        Default: ``sessup.upload.require_csrf``.

    ``storage``
        Default: the application's storage (:func:`get_storage`).

    Returns a :class:`ParsedUpload` whose files are still temporary: call
    :meth:`ParsedUpload.commit` to keep them or :meth:`ParsedUpload.discard`.
    Raises :class:`UnsupportedMediaType` (415, not multipart or a disallowed
    file), :class:`MalformedMultipart` (400), :class:`UploadTooLarge` (413, the
    limit named), :class:`InsufficientStorage` (507) or ``CSRFRefused`` (403); in
    every case nothing of the request is left on disk.
    """
    if isinstance(limits, SessupSettings):
        limits = UploadLimits.from_values(limits)
    if limits is None or csrf is None or file_fields is None:
        values: SessupSettings = request.registry.sessup_settings
        limits = limits or UploadLimits.from_values(values)
        file_fields = {values.upload.field} if file_fields is None else file_fields
        csrf = values.upload.require_csrf if csrf is None else csrf
    storage = storage or get_storage(request)

    boundary = multipart_boundary(request.environ.get("CONTENT_TYPE"))
    header_token = request.headers.get(CSRF_HEADER) if csrf else None
    if csrf:
        check_origin(request)
        if header_token is not None:
            check_token(request, header_token)

    receiver = _Receiver(storage, limits, file_fields)
    try:
        _parse(request, boundary, limits, receiver)
        if csrf and header_token is None:
            check_token(request, receiver.result.get(CSRF_FIELD))
    except BaseException as exc:
        receiver.abort()
        _raise_storage_error(exc)
        raise
    return receiver.result


def _parse(request: Request, boundary: str, limits: UploadLimits, receiver: _Receiver) -> None:
    length = request.environ.get("CONTENT_LENGTH") or ""
    parser = PushMultipartParser(
        boundary,
        content_length=int(length) if length.strip().isdigit() else -1,
        max_header_size=limits.max_header_size,
        # Limits are enforced (with their names) by the receiver; the parser's
        # own count is only a backstop against header-less part floods.
        max_segment_count=limits.max_files + limits.max_fields + 1,
        header_charset="latin1",
    )
    start, data, end = receiver.start, receiver.data, receiver.end
    try:
        for chunk in _body_chunks(request, limits.chunk_size):
            for event in parser.parse(chunk):
                if event.__class__ is bytes:
                    data(event)  # type: ignore[arg-type]
                elif event is None:
                    end()
                else:
                    start(event)  # type: ignore[arg-type]
        # End of input: raises unless the final boundary was seen (a body cut
        # short must never look like a complete, shorter file).
        parser.close()
    except ParserLimitReached as exc:
        if "header" in str(exc).lower():
            raise UploadTooLarge(f"A part header is larger than sessup.upload.max_header_size "
                                 f"({limits.max_header_size} bytes), or has too many lines") from None
        raise UploadTooLarge(f"Too many parts: sessup.upload.max_files ({limits.max_files}) plus "
                             f"sessup.upload.max_fields ({limits.max_fields})") from None
    except MultipartError as exc:
        raise MalformedMultipart(f"Malformed multipart body: {exc}") from None
