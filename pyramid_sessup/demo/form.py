"""``GET/POST /upload``: the deform upload form.

The POST never touches ``request.POST``: the body goes through the streaming
upload pipeline (:func:`pyramid_sessup.uploads.pipeline.receive_upload`), and
deform's pstruct is built from what it parsed:

* text fields (``csrf_token``, ``description``) from ``ParsedUpload.fields``;
* ``inputFile`` = ``{"upload": [StoredFile, ...], "keep": [uid, ...]}``: the
  new files (still temporary) and the files kept from an earlier try.

The widget hands every new file to the session's temp store; a form that fails
validation re-renders with those files ticked, so the user does not pick them
again.  On success every file gets its final name and the page lists them.
"""
from __future__ import annotations

from typing import Any

import deform
from pyramid.config import Configurator
from pyramid.renderers import render_to_response
from pyramid.request import Request
from pyramid.response import Response

from ..exceptions import UploadError
from ..forms.i18n import _
from ..forms.schema import UploadLimits, format_size, upload_schema
from ..forms.tempstore import SessionTempStore
from ..forms.widget import MultiFileUploadWidget
from ..settings import SessupSettings
from ..uploads import names
from ..uploads.pipeline import StoredFile, commit_files, get_storage, receive_upload
from ..uploads.pipeline import UploadLimits as PipelineLimits
from ..uploads.storage import Storage
from ..uploads.views import download_path
from .pages import page_values

TEMPLATE = "pyramid_sessup.demo:templates/upload.pt"
FORM_ID = "upload-form"
#: Text fields the form reads; any other text field is ignored.
TEXT_FIELDS = ("csrf_token", "description")


def _tmpstore(request: Request, storage: Storage) -> SessionTempStore:
    values = request.registry.sessup_settings
    store = SessionTempStore(request.session, storage, values.upload.temp_max_age,
                             max_entries=2 * values.upload.max_files)
    store.purge_expired()
    return store


def make_form(request: Request, tmpstore: SessionTempStore) -> deform.Form:
    values = request.registry.sessup_settings
    schema = upload_schema(tmpstore, UploadLimits.from_values(values), request.session.get_csrf_token(),
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
    size stays a hard limit; anything beyond these answers 413 as on /upFile.
    """
    return PipelineLimits.from_values(
        values,
        max_file_size=values.upload.max_total_size,
        max_files=2 * values.upload.max_files,
        allowed_extensions=(),
        allowed_types=(),
    )


def _render(request: Request, form_html: str | None, stored: list[dict[str, Any]] | None = None,
            description: str = "", status: int = 200) -> Response:
    response = render_to_response(TEMPLATE, {
        "page": page_values(request), "form": form_html, "stored": stored or [], "description": description,
    }, request=request)
    response.status_int = status
    response.headers["Cache-Control"] = "no-store"
    response.vary = ("Cookie", "Accept-Language")
    return response


def upload_form(request: Request) -> Response:
    """The empty form."""
    storage = get_storage(request)
    tmpstore = _tmpstore(request, storage)
    form = make_form(request, tmpstore)
    return _render(request, form.render())


def _finalize(request: Request, storage: Storage, tmpstore: SessionTempStore,
              files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check and store each validated file through the pipeline's one door
    (:func:`commit_files`: checks, quota, final names, event); all or nothing."""
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
    done: list[dict[str, Any]] = []
    for file, stored in zip(files, pending):
        tmpstore.pop(file["uid"])
        done.append({**file, "name": stored.name, "url": download_path(request, stored.name),
                     "size_text": format_size(file["size"])})
    return done


def _refused(request: Request, storage: Storage, exc: UploadError) -> Response:
    """The form again, with why the upload was refused, status as /upFile would answer."""
    tmpstore = _tmpstore(request, storage)
    form = make_form(request, tmpstore)
    request.session.flash(request.localizer.translate(
        _("The upload was refused: ${reason}", mapping={"reason": str(exc)})))
    response = _render(request, form.render(), status=exc.status_code)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def upload_submit(request: Request) -> Response:
    """Validate the streamed upload; success lists the stored files."""
    values = request.registry.sessup_settings
    field = values.upload.field
    storage = get_storage(request)
    try:
        parsed = receive_upload(request, limits=pipeline_limits(values), file_fields={field}, csrf=True,
                                storage=storage)
    except UploadError as exc:
        # Nothing of this request was kept (the pipeline removed it).
        return _refused(request, storage, exc)

    tmpstore = _tmpstore(request, storage)
    adopted = False
    try:
        pstruct: dict[str, Any] = {name: parsed.get(name, "") for name in TEXT_FIELDS}
        pstruct[field] = {"upload": parsed.files_of(field),
                          "keep": parsed.getall(field + MultiFileUploadWidget.keep_suffix)}
        form = make_form(request, tmpstore)
        adopted = True  # from here on the temp store owns the files
        try:
            appstruct = form.validate_pstruct(pstruct)
        except deform.ValidationFailure as failure:
            return _render(request, failure.render(), status=400)
        try:
            stored = _finalize(request, storage, tmpstore, appstruct[field])
        except UploadError as exc:
            return _refused(request, storage, exc)  # a refused file is removed; the others stay kept
    except BaseException:
        if not adopted:
            parsed.discard()
        raise
    # Anything still kept and not submitted again stays until it expires.
    return _render(request, None, stored=stored, description=appstruct.get("description") or "")


def includeme(config: Configurator) -> None:
    config.include("..forms.i18n")
    if not config.registry.sessup_settings.upload.enabled:
        return  # no upload directory: no upload form
    config.add_route("sessup.upload_form", "/upload")
    config.add_view(upload_form, route_name="sessup.upload_form", request_method="GET")
    # require_csrf=False: Pyramid's check would parse the body through
    # request.POST; the pipeline checks the form's csrf_token field itself.
    config.add_view(upload_submit, route_name="sessup.upload_form", request_method="POST", require_csrf=False)
