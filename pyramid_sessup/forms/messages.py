"""What people are told about an upload, in their language.

The add-on's error answers carry a stable ``code`` and the limit as numbers
(``details``) for scripts; their ``error`` text names settings and is for
developers.  Pages show these short messages instead, keyed by the same
codes: :func:`upload_error_message` on the server (the upload form), and
:func:`page_messages` hands the same templates to a page's script (``/ajax``),
which fills in ``${name}``, ``${limit}`` and ``${allowed}`` itself.

Sizes are written one way everywhere (:func:`format_size`): exact bytes below
1 KiB, else KiB/MiB/GiB with at most two decimals, the unit word translated.
"""
from __future__ import annotations

from typing import Any, Mapping

from pyramid.i18n import Localizer, TranslationString

from .i18n import DOMAIN, _, plural

#: The byte count, singular and plural (Chinese has one form).
BYTES = plural("${count} byte", "${count} bytes")

#: Messages by error code (see :mod:`pyramid_sessup.exceptions`).
UPLOAD_ERRORS: dict[str, TranslationString] = {
    "file_too_large": _("error-file-too-large", default="${name} is larger than ${limit}, the limit per file."),
    "total_too_large": _("error-total-too-large",
                         default="Together the files are larger than ${limit}, the limit per upload."),
    "too_many_files": _("error-too-many-files", default="Too many files: at most ${limit} per upload."),
    "type_not_allowed": _("error-type-not-allowed",
                          default="${name} is not an accepted type (accepted: ${allowed})."),
    "unsupported_type": _("error-type-refused", default="This type of file is not accepted."),
    "too_large": _("error-body-too-large", default="The upload is larger than the server accepts."),
    "no_file": _("no-files", default="Choose at least one file."),
    "too_many_fields": _("error-form-too-large", default="The form is too large for the server."),
    "field_too_large": _("error-form-too-large", default="The form is too large for the server."),
    "header_too_large": _("error-form-too-large", default="The form is too large for the server."),
    "too_many_parts": _("error-form-too-large", default="The form is too large for the server."),
    "insufficient_storage": _("error-no-room", default="The server has no room for these files now; "
                                                       "try again later."),
    "content_mismatch": _("error-content-mismatch",
                          default="${name} is not what its name says: its content is of another type."),
    "file_rejected": _("error-file-rejected", default="${name} was refused by the server's checks."),
    "file_rejected_unnamed": _("error-file-rejected-unnamed", default="A file was refused by the server's checks."),
    "scanner_unavailable": _("error-scanner-unavailable",
                             default="The server cannot check files right now; try again later."),
    "quota_exceeded": _("error-quota-exceeded", default="You have uploaded too much for now; try again later."),
    "csrf_token_missing": _("error-page-expired", default="This page has expired; reload it and try again."),
    "csrf_token_invalid": _("error-page-expired", default="This page has expired; reload it and try again."),
    "csrf_origin": _("error-foreign-origin", default="Refused: the request did not come from this site."),
    "store_unavailable": _("error-busy", default="The server is busy; try again in a moment."),
    # The object store behind the uploads did not answer: to a person, the server is busy.
    "storage_unavailable": _("error-busy", default="The server is busy; try again in a moment."),
    "session_locked": _("error-busy", default="The server is busy; try again in a moment."),
    # Answers that are not the add-on's: a 413 from the server or a proxy in
    # front (their own "Request Entity Too Large" text), any other status.
    "body_too_large": _("error-body-too-large", default="The upload is larger than the server accepts."),
    "failed": _("error-failed", default="The upload failed (error ${status}); try again."),
    "network": _("The connection failed."),
}

#: Codes not listed above (a malformed body, an unexpected field...).
UNREADABLE = _("error-unreadable", default="The server could not read the upload; try again.")


def format_size(size: int, localizer: Localizer | None = None) -> str:
    """``20971520`` -> ``"20 MiB"``, ``200000`` -> ``"195.31 KiB"``, ``12`` ->
    ``"12 bytes"`` (``"12 字节"`` with a Chinese ``localizer``)."""
    if size < 1024:
        if localizer is None:
            return f"{size} byte" if size == 1 else f"{size} bytes"
        return localizer.pluralize(*BYTES, size, domain=DOMAIN, mapping={"count": size})
    value = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.2f}".rstrip("0").rstrip(".") + " " + unit


def allowed_text(extensions: Any, types: Any) -> str:
    """``(["png"], ["image/*"])`` -> ``".png, image/*"``."""
    return ", ".join([*("." + str(e) for e in extensions or ()), *(str(t) for t in types or ())])


def upload_error_message(localizer: Localizer, code: str, details: Mapping[str, Any] | None = None,
                         status: int | None = None) -> str:
    """The short, translated message for an upload error ``code`` (with its ``details``)."""
    details = details or {}
    if code == "file_rejected" and not details.get("filename"):
        code = "file_rejected_unnamed"  # a verifier's refusal need not name the file
    template = UPLOAD_ERRORS.get(code)
    if template is None:
        template = UPLOAD_ERRORS["body_too_large"] if status == 413 else UNREADABLE
    limit = details.get("limit")
    if isinstance(limit, int) and code in ("file_too_large", "total_too_large"):
        limit = format_size(limit, localizer)
    mapping = {"name": details.get("filename") or "?", "limit": limit,
               "allowed": allowed_text(details.get("allowed_extensions"), details.get("allowed_types")),
               "status": status or ""}
    return localizer.translate(TranslationString(template, mapping=mapping))


def page_messages(localizer: Localizer) -> dict[str, Any]:
    """Translated templates for a page's script: ``errors`` by code, the
    fallback ``unreadable`` and the two forms of the byte count."""
    return {
        "errors": {code: localizer.translate(message) for code, message in UPLOAD_ERRORS.items()},
        "unreadable": localizer.translate(UNREADABLE),
        "bytes_one": localizer.pluralize(*BYTES, 1, domain=DOMAIN),
        "bytes_other": localizer.pluralize(*BYTES, 2, domain=DOMAIN),
    }
