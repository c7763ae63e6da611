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

:func:`commit_files` is the one door to the upload directory for every path
(``/upFile``, the deform form, tus completion): it runs the content check, the
virus scan and the host's verifiers on the still-temporary files, charges the
upload quota, gives the files their final names (all or nothing) and fires
:class:`~.events.UploadStored`.  A file becomes visible only after every
check passed.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Callable, Collection, Iterator

from multipart import MultipartError, MultipartSegment, ParserLimitReached, PushMultipartParser
from pyramid.request import Request

from ..csrf import CSRF_FIELD, CSRF_HEADER, HOW_TO, check_origin, check_token, visitor_nonce
from ..exceptions import (
    CSRFRefused,
    InsufficientStorage,
    MalformedMultipart,
    QuotaExceeded,
    UnsupportedMediaType,
    UploadError,
    UploadTooLarge,
)
from ..settings import SessupSettings
from . import clamav, names, quota, verify
from .body import ShortBody, body_length, iter_body
from .events import notify_stored
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

    @property
    def max_body_size(self) -> int:
        """The longest body these limits can accept: every file byte, every
        field byte, and each part's header block and boundary line.  A
        ``Content-Length`` above it is refused before the body is read."""
        parts = self.max_files + self.max_fields
        framing = self.max_header_size + MAX_BOUNDARY + 8  # "--" boundary CRLF, and the CRLF before the next
        return self.max_total_size + self.max_fields * self.max_field_size + (parts + 1) * framing

    @classmethod
    def from_values(cls, values: SessupSettings, **overrides: Any) -> UploadLimits:
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
    #: The request the files came with (checks, quota and the event need it).
    request: Request | None = None
    #: The limits the files were received under (their allow-lists drive the content check).
    limits: UploadLimits | None = None

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
        """Check the files and give each its final name (atomic rename, never
        overwriting), through :func:`commit_files`.

        If a check refuses them or any rename fails, the files already
        committed and all temporary files are removed and the error
        propagates: all or nothing.
        """
        if self.committed:
            return self.files
        try:
            if self.request is not None:
                commit_files(self.request, self.storage, self.files, limits=self.limits)
            else:
                finalize_all(self.storage, self.files)
        except BaseException:
            self.discard()
            raise
        self.committed = True
        return self.files

    def discard(self) -> None:
        """Remove every temporary file not yet committed."""
        for f in self.files:
            if f.temp_path:
                self.storage.discard(f.temp_path)
                f.temp_path = ""


def finalize_all(storage: Storage, files: list[StoredFile]) -> None:
    """Final names for every file, or none: a failure removes those already stored."""
    done: list[StoredFile] = []
    try:
        for f in files:
            f.name = storage.finalize(f.temp_path, f.extension, metadata=f.metadata())
            f.temp_path = ""
            done.append(f)
    except BaseException as exc:
        for f in done:
            storage.delete(f.name)
            f.name = ""
        _raise_storage_error(exc)
        raise


def refuses_the_file(exc: BaseException) -> bool:
    """True for an error that condemns the file itself (its content, a virus, a
    verifier), as opposed to a passing condition (scanner down, quota, disk)."""
    return (isinstance(exc, UploadError) and 400 <= exc.status_code < 500
            and not isinstance(exc, QuotaExceeded))


def check_files(request: Request, storage: Storage, files: list[StoredFile], *,
                limits: UploadLimits | None = None) -> None:
    """Every check a still-temporary file must pass before it is stored: the
    content check (415), the virus scan (422, or 503 when the scanner is
    down) and ``sessup.upload.verifiers`` (their error), in that order.

    A file refused on its own merits has its temporary file removed at once;
    the caller decides about the others.
    """
    values = request.registry.sessup_settings
    allowed_extensions = limits.allowed_extensions if limits is not None else values.upload.allowed_extensions
    allowed_types = limits.allowed_types if limits is not None else values.upload.allowed_types
    checks: list[Callable[[StoredFile], None]] = []
    if verify.content_check_applies(values.upload.content_check, allowed_extensions, allowed_types):
        checks.append(lambda f: verify.check_content(f, storage))
    if values.upload.clamav:
        checks.append(lambda f: clamav.scan_files(request, [f], storage))
    for verifier in values.upload.verifiers:
        checks.append(functools.partial(_call_verifier, verifier, request))
    for check in checks:
        for f in files:
            try:
                check(f)
            except BaseException as exc:
                if refuses_the_file(exc) and f.temp_path:
                    storage.discard(f.temp_path)
                    f.temp_path = ""
                raise


def _call_verifier(verifier: Callable[..., Any], request: Request, file: StoredFile) -> None:
    try:
        verifier(file, request)
    except UploadError as exc:
        exc.details.setdefault("filename", file.filename)  # pages name the file refused
        raise


def commit_files(request: Request, storage: Storage, files: list[StoredFile], *,
                 limits: UploadLimits | None = None, charge_quota: bool = True,
                 notify: bool = True) -> list[StoredFile]:
    """Store still-temporary ``files`` for good, the one way every upload path does.

    :func:`check_files` first, then the quota (``charge_quota``; tus charges
    at creation instead), then final names for all files or none, then
    :class:`~.events.UploadStored` (``notify``).  ``limits``: whose
    allow-lists decide whether the content check runs (default: the
    application's settings).  Raises what the checks raise (415, 422, 503,
    429) or :class:`InsufficientStorage` (507); the temporary files of a
    failed commit are the caller's to discard or keep.
    """
    if not files:
        return files
    check_files(request, storage, files, limits=limits)
    charged = quota.charge(request, len(files), sum(f.size for f in files)) if charge_quota else None
    try:
        finalize_all(storage, files)
    except BaseException:
        if charged is not None:
            try:
                charged.refund()
            except Exception:  # the store went away: the charge simply stands
                log.warning("could not refund an upload quota charge after a failed commit")
        raise
    if notify:
        notify_stored(request, files)
    return files


def get_storage(request: Request) -> Storage:
    """The :class:`Storage` of the application (created on first use)."""
    return upload_storage(request.registry)


def multipart_boundary(content_type: str | None) -> str:
    """The boundary of a ``multipart/form-data`` ``Content-Type``.

    Raises :class:`UnsupportedMediaType` (415) for any other type and
    :class:`MalformedMultipart` (400) for a missing or invalid boundary.
    """
    main, params = names.parse_header_params(content_type or "")
    if main != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Expected a multipart/form-data body, got {main or 'no Content-Type'}", code="not_multipart")
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


def _header_too_large(limits: UploadLimits, more: str = "") -> UploadTooLarge:
    return UploadTooLarge(f"A part header is larger than sessup.upload.max_header_size "
                          f"({limits.max_header_size} bytes){',' if more else ''}{more}", code="header_too_large",
                          limit=limits.max_header_size, setting="sessup.upload.max_header_size")


def _write_all(f: TempFile, data: bytes) -> None:
    written = f.write(data)
    if written is not None and written < len(data):  # partial write: finish it without copying
        view = memoryview(data)[written:]
        while view:
            written = f.write(view) or 0
            view = view[written:]


#: Part headers that may appear once only (RFC 7578 section 4.8).
_SINGLE_HEADERS = ("content-disposition", "content-type")
#: Content-Disposition parameters that may appear once only.
_SINGLE_PARAMS = ("name", "filename", "filename*")


def _unambiguous_params(segment: MultipartSegment) -> list[tuple[str, str]]:
    """The part's Content-Disposition parameters, refusing (400) anything that
    two parsers could read two ways: a repeated header or parameter, where
    one takes the first and another the last, or a bare CR or LF in a name,
    which some parsers take for the end of the header."""
    counts: dict[str, int] = {}
    for key, _ in segment.headerlist:
        counts[key.lower()] = counts.get(key.lower(), 0) + 1
    for header in _SINGLE_HEADERS:
        if counts.get(header, 0) > 1:
            raise MalformedMultipart(f"A part has {counts[header]} {header.title()} headers; one is allowed")
    _, params = names.parse_header_params(segment.header("Content-Disposition", ""))
    seen: set[str] = set()
    for key, value in params:
        if key in _SINGLE_PARAMS:
            if key in seen:
                raise MalformedMultipart(f"A part's Content-Disposition repeats the {key!r} parameter")
            seen.add(key)
            # As sent, not as decoded: browsers send a CR in a file name as %0D (HTML's
            # form encoding), which is fine; a raw CR is what parsers disagree on.
            if "\r" in value or "\n" in value:
                raise MalformedMultipart(f"A part's {key!r} parameter contains a bare CR or LF character")
    return params


class _Receiver:
    """State of one upload while it streams; owns the open temporary file."""

    def __init__(self, storage: Storage, limits: UploadLimits, file_fields: Collection[str],
                 check_field_token: Callable[[str | None], None] | None = None) -> None:
        self.storage = storage
        #: Set when the token comes in the body: the ``csrf_token`` field must
        #: precede the first file and is checked when that file starts, so no
        #: file byte is written for a request without the right token.
        self.check_field_token = check_field_token
        self.limits = limits
        self.any_field = ANY_FIELD in file_fields
        self.file_fields = file_fields
        self.result = ParsedUpload(storage, limits=limits)
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
            raise _header_too_large(limits)
        params = _unambiguous_params(segment)
        field = names.recover_utf8(segment.name or "")
        filename_star = None
        if segment.filename is None:
            filename_star = next((v for k, v in params if k == "filename*"), None)
        if segment.filename is None and filename_star is None:
            self._start_field(field)
        else:
            raw_name = names.recover_utf8(segment.filename) if segment.filename is not None else None
            self._start_file(field, raw_name, filename_star, segment.content_type or "")

    def _start_field(self, field: str) -> None:
        if len(self.result.fields) >= self.limits.max_fields:
            raise UploadTooLarge(f"Too many form fields: sessup.upload.max_fields is {self.limits.max_fields}",
                                 code="too_many_fields", limit=self.limits.max_fields,
                                 setting="sessup.upload.max_fields")
        self.field_name = field
        self.field_data = []
        self.field_size = 0

    def _start_file(self, field: str, raw_name: str | None, filename_star: str | None,
                    client_type: str) -> None:
        limits = self.limits
        if self.check_field_token is not None:
            check, self.check_field_token = self.check_field_token, None
            check(self.result.get(CSRF_FIELD))
        self.file_parts += 1
        if self.file_parts > limits.max_files:
            raise UploadTooLarge(f"Too many files: sessup.upload.max_files is {limits.max_files}",
                                 code="too_many_files", limit=limits.max_files, setting="sessup.upload.max_files")
        if not self.any_field and field not in self.file_fields:
            raise MalformedMultipart(f"Unexpected file field {field!r}", code="unexpected_file_field", field=field)
        if raw_name == "" and filename_star is None:
            # An empty file input: browsers send filename="" and no data. Not a file.
            return
        filename = names.display_name(raw_name, filename_star)
        ext = names.extension_of(filename)
        media_type = names.guess_type(ext)
        shown = filename or "(unnamed)"
        refused: dict[str, Any] = {
            "filename": filename, "extension": ext, "content_type": media_type,
            "allowed_extensions": list(limits.allowed_extensions), "allowed_types": list(limits.allowed_types)}
        if not names.extension_allowed(ext, limits.allowed_extensions):
            raise UnsupportedMediaType(f"File {shown!r}: extension {ext or '(none)'!r} is not in "
                                       f"sessup.upload.allowed_extensions", code="type_not_allowed", **refused)
        if not names.type_allowed(media_type, limits.allowed_types):
            raise UnsupportedMediaType(f"File {shown!r}: type {media_type} is not in sessup.upload.allowed_types",
                                       code="type_not_allowed", **refused)
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
                                     f"sessup.upload.max_file_size ({self.limits.max_file_size} bytes)",
                                     code="file_too_large", limit=self.limits.max_file_size,
                                     setting="sessup.upload.max_file_size", filename=current.filename)
            self.total += len(chunk)
            if self.total > self.limits.max_total_size:
                raise UploadTooLarge(f"The files are larger than sessup.upload.max_total_size "
                                     f"({self.limits.max_total_size} bytes) in total "
                                     f"(at {current.filename or '(unnamed)'!r})",
                                     code="total_too_large", limit=self.limits.max_total_size,
                                     setting="sessup.upload.max_total_size", filename=current.filename)
            current.size = size
            self.hasher.update(chunk)
            _write_all(self.out, chunk)  # type: ignore[arg-type]
        elif self.field_name is not None:
            self.field_size += len(chunk)
            if self.field_size > self.limits.max_field_size:
                raise UploadTooLarge(f"Field {self.field_name!r} is larger than sessup.upload.max_field_size "
                                     f"({self.limits.max_field_size} bytes)", code="field_too_large",
                                     limit=self.limits.max_field_size, setting="sessup.upload.max_field_size",
                                     field=self.field_name)
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

    def received(self) -> ParsedUpload:
        """Stop here and keep only what was complete: the files whose last byte
        arrived (the one being received is removed) and the text fields."""
        current, self.current = self.current, None
        self.close_file()
        if current is not None:
            self.result.files.remove(current)
            self.storage.discard(current.temp_path)
        self.field_name = None
        return self.result


def receive_upload(
    request: Request,
    *,
    limits: UploadLimits | SessupSettings | None = None,
    file_fields: Collection[str] | None = None,
    csrf: bool | None = None,
    storage: Storage | None = None,
    keep_received: bool = False,
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
        sent before the first file (checked when the first file starts, and
        after parsing).  A request without a session cookie cannot hold a
        valid token: it is refused before the body is read.  A failure raises
        :class:`~pyramid_sessup.exceptions.CSRFRefused` (403).
        Default: ``sessup.upload.require_csrf``.

    ``storage``
        Default: the application's storage (:func:`get_storage`).

    ``keep_received``
        On a limit or type refusal (413, 415), keep the files complete before
        it and the text fields read so far in the error's ``received``
        (a :class:`ParsedUpload`), so a form can show them again; the caller
        then owns those temporary files.  Only a request whose CSRF token
        checked out gets them: otherwise everything is removed and the CSRF
        error is raised instead.  Default: False (nothing is kept).

    Returns a :class:`ParsedUpload` whose files are still temporary: call
    :meth:`ParsedUpload.commit` to keep them or :meth:`ParsedUpload.discard`.
    Raises :class:`UnsupportedMediaType` (415, not multipart or a disallowed
    file), :class:`MalformedMultipart` (400, also for ambiguous part headers),
    :class:`UploadTooLarge` (413, the limit named), :class:`QuotaExceeded`
    (429, the visitor's quota is used up: checked before the body is read),
    :class:`InsufficientStorage` (507) or ``CSRFRefused`` (403); in every case
    nothing of the request is left on disk.  The content check, virus scan,
    verifiers and the quota charge run at :meth:`ParsedUpload.commit`.
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
    # Everything a refusal needs is judged before the first byte of the body
    # is read: a server that streams the body (production) then spends no
    # disk and no time on a request it refuses.
    header_token = request.headers.get(CSRF_HEADER) if csrf else None
    if csrf:
        check_origin(request)
        if header_token is not None:
            check_token(request, header_token)
        elif visitor_nonce(request) is None:
            # No visitor cookie: no token in the body can match one (and none is created here).
            raise CSRFRefused(f"CSRF token missing (no CSRF cookie): {HOW_TO}", code="csrf_token_missing")
    try:
        declared = body_length(request.environ)
    except ValueError:
        raise MalformedMultipart("Invalid Content-Length") from None
    if declared > limits.max_body_size:
        raise UploadTooLarge(f"The request body ({declared} bytes) is larger than the upload limits allow "
                             f"(sessup.upload.max_total_size {limits.max_total_size} bytes, plus fields and "
                             f"framing: {limits.max_body_size} bytes)", code="total_too_large",
                             limit=limits.max_total_size, setting="sessup.upload.max_total_size")

    # A visitor whose quota is used up is refused before the body is read.
    quota.precheck(request)

    field_token = csrf and header_token is None
    receiver = _Receiver(storage, limits, file_fields,
                         check_field_token=(lambda supplied: check_token(request, supplied)) if field_token else None)
    receiver.result.request = request
    try:
        try:
            _parse(request, boundary, limits, receiver)
        except (UploadTooLarge, UnsupportedMediaType) as exc:
            if not keep_received:
                raise
            received = receiver.received()
            if field_token:
                check_token(request, received.get(CSRF_FIELD))
            exc.received = received
            raise
        if field_token:
            check_token(request, receiver.result.get(CSRF_FIELD))
    except BaseException as exc:
        if getattr(exc, "received", None) is None:
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
            raise _header_too_large(limits, " or has too many lines") from None
        raise UploadTooLarge(f"Too many parts: sessup.upload.max_files ({limits.max_files}) plus "
                             f"sessup.upload.max_fields ({limits.max_fields})", code="too_many_parts",
                             limit=limits.max_files + limits.max_fields,
                             setting="sessup.upload.max_files + sessup.upload.max_fields") from None
    except MultipartError as exc:
        raise MalformedMultipart(f"Malformed multipart body: {exc}") from None
