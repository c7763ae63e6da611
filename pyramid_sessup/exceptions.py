"""Exceptions raised by pyramid_sessup.

Configuration problems raise :class:`pyramid.exceptions.ConfigurationError`
(so they stop start-up like any other Pyramid misconfiguration); everything
here is a runtime error that maps onto an HTTP answer.
"""
from __future__ import annotations


class SessupError(Exception):
    """Base class of every runtime error raised by pyramid_sessup."""

    #: HTTP status the error maps to when it escapes a view.
    status_code: int = 500
    #: Seconds a client should wait before trying again (``Retry-After``), if any.
    retry_after: int | None = None


class SessionError(SessupError):
    """Base class of session errors."""


class StoreUnavailable(SessionError):
    """The session store could not be reached (connect/read timeout, refused)."""

    status_code = 503
    retry_after = 5


class SessionLockTimeout(SessionError):
    """``sessup.session.lock`` is on and the session lock was not acquired in time."""

    status_code = 503
    retry_after = 5


class SessionValueError(SessionError, TypeError):
    """A value stored in the session cannot be represented as JSON."""

    status_code = 500


class UploadError(SessupError):
    """Base class of upload errors; ``status_code`` is the HTTP answer."""

    status_code = 400


class MalformedMultipart(UploadError):
    """The request body is not valid ``multipart/form-data``."""

    status_code = 400


class UploadTooLarge(UploadError):
    """A configured upload limit was exceeded; the message names the limit."""

    status_code = 413


class UnsupportedMediaType(UploadError):
    """The request is not multipart, or a file's type/extension is not allowed."""

    status_code = 415


class InsufficientStorage(UploadError):
    """The upload directory's filesystem is full."""

    status_code = 507


class UploadRejected(UploadError):
    """A file was refused on its content: the virus scanner found something,
    or a verifier (``sessup.upload.verifiers``) refused it.  Verifiers raise
    this (or another :class:`UploadError`) to refuse an upload; the message
    should name the file."""

    status_code = 422


class ScannerUnavailable(UploadError):
    """The virus scanner (``sessup.upload.clamav``) could not be reached or did
    not answer in time, and ``sessup.upload.clamav_on_error`` is ``fail``."""

    status_code = 503
    retry_after = 30


class QuotaExceeded(UploadError):
    """An upload quota (``sessup.upload.quota_files``/``quota_bytes``) is
    used up for the current window; ``retry_after`` says when it frees up."""

    status_code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))
