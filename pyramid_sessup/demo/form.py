"""``GET/POST /upload``: the deform upload form.

The POST never touches ``request.POST``: the body goes through the streaming
upload pipeline (:func:`pyramid_sessup.uploads.pipeline.receive_upload`), and
deform's pstruct is built from what it parsed:

* text fields (``csrf_token``, ``description``) from ``ParsedUpload.fields``;
* ``inputFile`` = ``{"upload": [StoredFile, ...], "keep": [uid, ...]}``: the
  new files (still temporary) and the files kept from an earlier try.

The widget hands every new file to the session's temp store; a form that fails
validation re-renders with those files ticked, so the user does not pick them
again.  So does a form refused by a limit of the pipeline (413, 415): the
files complete before the limit and the description come back, with the
reason as an error.  A dead CSRF token (the session expired or was
destroyed) gets a page that says so and offers to reload the form.

On success every file gets its final name and the browser is sent (303) to
``GET /upload/done``, which lists them: reloading that page stores nothing.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

import deform
from pyramid.config import Configurator
from pyramid.renderers import render_to_response
from pyramid.request import Request
from pyramid.response import Response

from ..csrf import csrf_config, visitor_nonce
from ..exceptions import CSRFRefused, UploadError
from ..forms.i18n import DOMAIN, _, plural
from ..forms.messages import format_size, upload_error_message
from ..forms.schema import MAX_DESCRIPTION, UploadLimits, upload_schema
from ..forms.tempstore import SessionTempStore
from ..forms.widget import MultiFileUploadWidget
from ..settings import SessupSettings
from ..uploads import names
from ..uploads.pipeline import StoredFile, commit_files, get_storage, receive_upload
from ..uploads.pipeline import UploadLimits as PipelineLimits
from ..uploads.storage import Storage
from ..uploads.views import download_path
from ..urls import SeeOther
from .pages import no_store, page_values, stale_form

TEMPLATE = "pyramid_sessup.demo:templates/upload.pt"
FORM_ID = "upload-form"
#: Text fields the form reads; any other text field is ignored.
TEXT_FIELDS = ("csrf_token", "description")
#: Refusals after which the files that fit are kept (a count or a malformed
#: form is fixed by choosing again, not by unticking).
KEEP_AFTER = frozenset({"file_too_large", "total_too_large", "type_not_allowed"})
SAVED = plural("Saved ${count} file.", "Saved ${count} files.")
#: Session key of the last successful upload, shown by ``GET /upload/done``.
RESULT_KEY = "sessup.form_result"


def _tmpstore(request: Request, storage: Storage) -> SessionTempStore:
    values = request.registry.sessup_settings
    store = SessionTempStore(request.session, storage, values.upload.temp_max_age,
                             max_entries=2 * values.upload.max_files)
    store.purge_expired()
    return store


def make_form(request: Request, tmpstore: SessionTempStore) -> deform.Form:
    values = request.registry.sessup_settings
    schema = upload_schema(tmpstore, UploadLimits.from_values(values, request.localizer),
                           request.session.get_csrf_token(),
                           field=values.upload.field)
    translate = request.localizer.translate
    form = deform.Form(schema, formid=FORM_ID, action=request.route_path("sessup.upload_form"),
                       buttons=(deform.Button("submit", translate(_("Upload"))),),
                       renderer=request.registry.sessup_deform_renderer)
    # The server is the one judge: its (translated) messages, not the browser's.
    form.widget.attributes = {"novalidate": "novalidate"}
    return form


def pipeline_limits(values: SessupSettings) -> PipelineLimits:
    """The pipeline's hard limits for the form.

    The form reports a file over the per-file size, of a refused type, or one
    file too many as a message beside the field (naming file and limit), so
    those files must reach it: the pipeline lets a single file grow up to the
    total limit, takes any type, and allows twice the file count.  The total
    size stays a hard limit; anything beyond these answers 413 as on /upFile,
    and :func:`refusal_message` names the form's own limits, not these.
    """
    return PipelineLimits.from_values(
        values,
        max_file_size=values.upload.max_total_size,
        max_files=2 * values.upload.max_files,
        allowed_extensions=(),
        allowed_types=(),
    )


def refusal_message(request: Request, exc: UploadError) -> str:
    """The translated reason for a refusal of the pipeline, naming the limit
    people are held to (the pipeline's own cut-offs for the form are looser)."""
    values = request.registry.sessup_settings
    details = dict(exc.details)
    if exc.code == "file_too_large":
        # Past the pipeline's cut-off (the total), so past the per-file limit too.
        details["limit"] = values.upload.max_file_size
    elif exc.code == "too_many_files":
        details["limit"] = values.upload.max_files
    return upload_error_message(request.localizer, exc.code, details, exc.status_code)


def _render(request: Request, form_html: str | None, status: int = 200, errors: list[str] | None = None,
            **values: Any) -> Response:
    response = render_to_response(TEMPLATE, {
        "page": page_values(request), "form": form_html, "errors": errors or [], "stored": [],
        "saved_text": "", "description": "", **values,
    }, request=request)
    response.status_int = status
    no_store(request, response)
    return response


def upload_form(request: Request) -> Response:
    """The form, offering the files this visitor still has kept (a refused
    upload's, when the form came back through a reload, an expired token's
    page or a new tab): a kept file is never hidden while it lasts."""
    storage = get_storage(request)
    tmpstore = _tmpstore(request, storage)
    form = make_form(request, tmpstore)
    kept = [entry for entry in map(tmpstore.get, tmpstore) if entry is not None]
    if not kept:
        return _render(request, form.render())
    kept.sort(key=lambda entry: entry.get("created", 0))
    return _render(request, form.render({request.registry.sessup_settings.upload.field: kept}))


def _finalize(request: Request, storage: Storage, tmpstore: SessionTempStore,
              files: list[dict[str, Any]]) -> list[str]:
    """Check and store each validated file through the pipeline's one door
    (:func:`commit_files`: checks, quota, final names, event); all or nothing.
    Returns the stored names."""
    allowed = request.registry.sessup_settings.upload.allowed_extensions
    field = request.registry.sessup_settings.upload.field
    pending: list[StoredFile] = []
    for file in files:
        temp_path = tmpstore.temp_path(file["uid"])
        if temp_path is None:  # expired between validation and now
            raise UploadError(f"{file['filename']}: the kept file has expired; pick it again")
        pending.append(StoredFile(
            field=field, filename=file["filename"], content_type=file["mimetype"], size=file["size"],
            sha256=file["sha256"], temp_path=temp_path,
            extension=names.stored_extension(names.extension_of(file["filename"]), allowed)))
    commit_files(request, storage, pending)
    for file in files:
        tmpstore.pop(file["uid"])
    return [stored.name for stored in pending]


def _pstruct(parsed: Any, field: str) -> dict[str, Any]:
    pstruct: dict[str, Any] = {name: parsed.get(name, "") for name in TEXT_FIELDS}
    pstruct[field] = {"upload": parsed.files_of(field),
                      "keep": parsed.getall(field + MultiFileUploadWidget.keep_suffix)}
    return pstruct


def _refused(request: Request, storage: Storage, exc: UploadError, field: str) -> Response:
    """The form again after a refusal of the pipeline, as an error, with the
    description and the files that were complete before it."""
    reason = refusal_message(request, exc)
    tmpstore = _tmpstore(request, storage)
    form = make_form(request, tmpstore)
    received = exc.received
    if received is None:
        return _retry_after(request, _render(request, form.render(), status=exc.status_code, errors=[reason]), exc)
    if exc.code not in KEEP_AFTER or not (received.files or received.getall(field + MultiFileUploadWidget.keep_suffix)):
        # Nothing to keep: the reason alone (not also "choose at least one file"), the description back.
        received.discard()
        description = (received.get("description") or "")[:MAX_DESCRIPTION]
        return _render(request, form.render({"description": description}), status=exc.status_code,
                       errors=[reason])
    try:
        appstruct = form.validate_pstruct(_pstruct(received, field))  # the widget adopts the files
    except deform.ValidationFailure as failure:
        return _render(request, failure.render(), status=exc.status_code, errors=[reason])
    except BaseException:
        received.discard()
        raise
    return _render(request, form.render(appstruct), status=exc.status_code, errors=[reason])


def _retry_after(request: Request, response: Response, exc: UploadError) -> Response:
    """Retry-After as the add-on's error answers send it: the error's own, else
    ``sessup.retry_after`` on every 429 and 503."""
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    elif exc.status_code in (429, 503):
        response.headers["Retry-After"] = str(request.registry.sessup_settings.retry_after)
    return response


def upload_submit(request: Request) -> Response:
    """Validate the streamed upload; success stores the files and redirects to the result."""
    values = request.registry.sessup_settings
    field = values.upload.field
    storage = get_storage(request)
    try:
        parsed = receive_upload(request, limits=pipeline_limits(values), file_fields={field}, csrf=True,
                                storage=storage, keep_received=True)
    except CSRFRefused as exc:
        # Nothing of this request was kept: the token no longer matches the session.
        return stale_form(request, exc, request.route_path("sessup.upload_form"))
    except UploadError as exc:
        return _refused(request, storage, exc, field)

    tmpstore = _tmpstore(request, storage)
    adopted = False
    try:
        form = make_form(request, tmpstore)
        adopted = True  # from here on the temp store owns the files
        try:
            appstruct = form.validate_pstruct(_pstruct(parsed, field))
        except deform.ValidationFailure as failure:
            return _render(request, failure.render(), status=400)
        try:
            stored = _finalize(request, storage, tmpstore, appstruct[field])
        except UploadError as exc:
            return _refused(request, storage, exc, field)  # a refused file is removed; the others stay kept
    except BaseException:
        if not adopted:
            parsed.discard()
        raise
    # Anything still kept and not submitted again stays until it expires.
    result = {"names": stored, "description": appstruct.get("description") or ""}
    done = request.route_path("sessup.upload_done")
    payload = _encode_result(result)
    if len(payload) <= MAX_RESULT_URL:
        # In the URL, signed for this visitor: an anonymous upload stores no session.
        return SeeOther(location=f"{done}?r={payload}&s={_result_signatures(request, payload)[0]}")
    request.session[RESULT_KEY] = result  # too long for a URL (hundreds of files)
    return SeeOther(location=done)


#: Longest result carried in the redirect's URL (browsers and proxies take 8 KiB).
MAX_RESULT_URL = 6000


def _encode_result(result: dict[str, Any]) -> str:
    raw = json.dumps(result, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _result_signatures(request: Request, payload: str) -> list[str]:
    """HMACs of ``payload`` bound to the visitor's CSRF nonce, one per secret
    (the first signs): another visitor, or a forged link, shows nothing."""
    message = ((visitor_nonce(request) or "") + "\0" + payload).encode("ascii")
    return [base64.urlsafe_b64encode(hmac.digest(hashlib.sha256(b"pyramid_sessup.demo.form-result\0" + key).digest(),
                                                 message, "sha256")).rstrip(b"=").decode("ascii")
            for key in csrf_config(request).keys]


def _result_from_url(request: Request) -> Any:
    payload, signature = request.GET.get("r"), request.GET.get("s")
    if not payload or not signature or len(payload) > MAX_RESULT_URL or not payload.isascii():
        return None
    if not any(hmac.compare_digest(expected, signature) for expected in _result_signatures(request, payload)):
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):
        return None


def upload_done(request: Request) -> Response:
    """The files of this visitor's last successful upload (a GET: reloading stores nothing)."""
    result = _result_from_url(request) if "r" in request.GET else request.session.get(RESULT_KEY)
    if not isinstance(result, dict) or not isinstance(result.get("names"), list):
        return SeeOther(location=request.route_path("sessup.upload_form"))
    storage = get_storage(request)
    localizer = request.localizer
    stored = []
    for name in result["names"]:
        meta = storage.metadata(name) if isinstance(name, str) else None
        if meta is None:  # removed since
            continue
        stored.append({"name": name, "url": download_path(request, name), "filename": meta.get("filename") or name,
                       "size": meta.get("size", 0), "sha256": meta.get("sha256", ""),
                       "size_text": format_size(int(meta.get("size") or 0), localizer)})
    count = len(stored)
    saved = localizer.pluralize(*SAVED, count, domain=DOMAIN, mapping={"count": count})
    return _render(request, None, stored=stored, saved_text=saved, description=result.get("description") or "")


def includeme(config: Configurator) -> None:
    config.include("..forms.i18n")
    if not config.registry.sessup_settings.upload.enabled:
        return  # no upload directory: no upload form
    config.add_route("sessup.upload_form", "/upload")
    config.add_route("sessup.upload_done", "/upload/done")
    config.add_view(upload_form, route_name="sessup.upload_form", request_method="GET")
    # require_csrf=False: Pyramid's check would parse the body through
    # request.POST; the pipeline checks the form's csrf_token field itself.
    config.add_view(upload_submit, route_name="sessup.upload_form", request_method="POST", require_csrf=False)
    config.add_view(upload_done, route_name="sessup.upload_done", request_method="GET")
