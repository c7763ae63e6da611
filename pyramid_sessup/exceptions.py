"""Exceptions raised by pyramid_sessup: one hierarchy for every answer it gives.

Configuration problems raise :class:`pyramid.exceptions.ConfigurationError`
(so they stop start-up like any other Pyramid misconfiguration); everything
here is a runtime error that maps onto an HTTP answer, rendered by
:func:`pyramid_sessup.errors.render_error` (text or JSON by ``Accept``).

Each class carries ``status_code`` (the HTTP status) and ``code`` (a stable
machine-readable name for scripts; the message is for people and may change).
"""
from __future__ import annotations

from typing import Any, Mapping


class SessupError(Exception):
    """Base class of every runtime error raised by pyramid_sessup.

    ``message``: for people.  ``headers``: extra response headers (``Allow``,
    ``Upload-Offset``...).  ``details``: extra JSON members for scripts
    (for example the limit, in bytes).  ``status``: overrides the class's
    ``status_code`` for one instance.
    """

    #: HTTP status the error maps to when it escapes a view.
    status_code: int = 500
    #: Stable machine-readable name, sent as ``code`` in JSON answers.
    code: str = "error"

    def __init__(self, message: str = "", *, headers: Mapping[str, str] | None = None,
                 status: int | None = None, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message or type(self).__name__
        self.headers = dict(headers or {})
        self.details = details
        if status is not None:
            self.status_code = status
        if code is not None:
            self.code = code

    #: Seconds a client should wait before trying again (``Retry-After``), if any.
    retry_after: int | None = None


class SessionError(SessupError):
    """Base class of session errors."""


class StoreUnavailable(SessionError):
    """The session store could not be reached (connect/read timeout, refused)."""

    status_code = 503
    code = "store_unavailable"


class SessionLockTimeout(SessionError):
    """``sessup.session.lock`` is on and the session lock was not acquired in time."""

    status_code = 503
    code = "session_locked"


class SessionValueError(SessionError, TypeError):
    """A value stored in the session cannot be represented as JSON."""

    status_code = 500
    code = "session_value"


class CSRFRefused(SessupError):
    """A state-changing request to the add-on without the right CSRF token, or
    from a foreign origin."""

    status_code = 403
    code = "csrf_token_invalid"


class NotFound(SessupError):
    """Nothing at this address of the add-on (an unknown stored file, upload...)."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(SessupError):
    """The add-on's route does not answer this method; ``Allow`` says which do."""

    status_code = 405
    code = "method_not_allowed"


class UploadError(SessupError):
    """Base class of upload errors; ``status_code`` is the HTTP answer.

    ``received``: set only by ``receive_upload(..., keep_received=True)`` on a
    limit or type refusal of a CSRF-checked request: the
    :class:`~pyramid_sessup.uploads.pipeline.ParsedUpload` of the files
    complete before the refusal (still temporary) and the text fields read so
    far.  Whoever catches the error owns them: adopt or ``discard()`` them.
    """

    status_code = 400
    code = "upload_refused"
    received: Any = None


class MalformedMultipart(UploadError):
    """The request body is not valid ``multipart/form-data`` (``malformed_body``),
    carries no file (``no_file``) or a file in a field that takes none
    (``unexpected_file_field``)."""

    status_code = 400
    code = "malformed_body"


class UploadTooLarge(UploadError):
    """A configured upload limit was exceeded; the message names the setting.

    ``code`` says which limit (``file_too_large``, ``total_too_large``,
    ``too_many_files``, ``too_many_fields``, ``field_too_large``,
    ``header_too_large``, ``too_many_parts``) and ``details`` carry ``limit``
    (a number: bytes or a count) and ``setting`` (its ``sessup.*`` key), plus
    ``filename`` or ``field`` where one part is at fault.
    """

    status_code = 413
    code = "too_large"


class UnsupportedMediaType(UploadError):
    """The request is not multipart (``not_multipart``), or a file's extension or
    type is not allowed (``type_not_allowed``, with ``filename``, ``extension``,
    ``content_type``, ``allowed_extensions`` and ``allowed_types`` in ``details``)."""

    status_code = 415
    code = "unsupported_type"


class InsufficientStorage(UploadError):
    """The upload directory's filesystem is full or refuses writes."""

    status_code = 507
    code = "insufficient_storage"


class StorageUnavailable(UploadError):
    """The object storage (``sessup.upload.storage = s3``) could not be reached,
    or refused a request it should take; nothing of the upload was kept."""

    status_code = 503
    code = "storage_unavailable"
class UploadRejected(UploadError):
    """A file was refused on its content: the virus scanner found something,
    or a verifier (``sessup.upload.verifiers``) refused it.  Verifiers raise
    this (or another :class:`UploadError`) to refuse an upload; the message
    should name the file."""

    status_code = 422
    code = "file_rejected"


class ScannerUnavailable(UploadError):
    """The virus scanner (``sessup.upload.clamav``) could not be reached or did
    not answer in time, and ``sessup.upload.clamav_on_error`` is ``fail``."""

    status_code = 503
    code = "scanner_unavailable"


class QuotaExceeded(UploadError):
    """An upload quota (``sessup.upload.quota_files``/``quota_bytes``) is
    used up for the current window; ``retry_after`` says when it frees up."""

    status_code = 429
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
