"""``POST /upFile`` (streaming upload) and ``GET /uploads/{name}`` (safe download):
the route group ``config.include("pyramid_sessup.uploads")``.

``includeme`` also sweeps temporary files left by a crash (older than
``sessup.upload.temp_max_age``) when the application starts; the
``sessup-sweep`` command does the same on demand.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from ..csrf import CSRF_FIELD
from ..errors import wants_json
from ..exceptions import MalformedMultipart, NotFound, StorageUnavailable
from ..routing import add_route_views, ensure_base
from ..urls import Answer, group_url
from . import names
from .pipeline import get_storage, receive_upload
from .preconditions import rfc9110_download
from .s3 import S3Storage
from .storage import NAME_PATTERN, Download, upload_storage

log = logging.getLogger(__name__)


GROUP = "uploads"


def download_path(request: Request, name: str) -> str:
    """The URL of stored file ``name`` (a path unless ``sessup.public_url`` is set),
    under the route prefix the group was included with.

    Stored names match :data:`~.storage.NAME_PATTERN`, which needs no quoting.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("not a stored file name")
    prefix = request.registry.sessup_settings.upload.url_prefix.rstrip("/")
    return group_url(request, GROUP, f"{prefix}/{name}")

def upload(request: Request) -> Response:
    """Receive one or more files in ``sessup.upload.field``; answer the URL
    of the first (text) or every file's details (JSON): ``field``,
    ``filename`` (the client's name, cleaned), ``stored_name`` (its name in the
    upload directory), ``url``, ``size``, ``sha256``, ``content_type``."""
    values = request.registry.sessup_settings
    parsed = receive_upload(request)
    if not parsed.files:
        parsed.discard()
        raise MalformedMultipart(f"No file was uploaded in field {values.upload.field!r}", code="no_file",
                                 field=values.upload.field)
    parsed.commit()
    urls = [download_path(request, f.name) for f in parsed.files]
    if wants_json(request):
        fields: dict[str, list[str]] = {}
        for key, value in parsed.fields:
            if key != CSRF_FIELD:
                fields.setdefault(key, []).append(value)
        body: dict[str, Any] = {
            "files": [
                # stored_name: the file's name in the upload directory; url: where to get it.
                {"field": f.field, "filename": f.filename, "stored_name": f.name, "url": url, "size": f.size,
                 "sha256": f.sha256, "content_type": f.content_type}
                for f, url in zip(parsed.files, urls)
            ],
            "fields": fields,
        }
        response = Answer(json_body=body)
    else:
        response = Answer(body=urls[0].encode("utf-8"), content_type="text/plain", charset="utf-8")
    response.headers["Cache-Control"] = "no-store"
    return response


class _FileIter:
    """Body of a download; supports ranges (WebOb calls :meth:`app_iter_range`
    for ``Range`` requests) and always releases the download."""

    def __init__(self, download: Download) -> None:
        self.download = download

    def __iter__(self) -> Iterator[bytes]:
        return self.app_iter_range()

    def app_iter_range(self, start: int | None = None, stop: int | None = None) -> Iterator[bytes]:
        return self.download.iter_range(start, stop)

    def close(self) -> None:
        self.download.close()


def _safety_headers(response: Response) -> None:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox"


def download(request: Request) -> Response:
    """Serve a stored file so that it can never act as a page of this site."""
    storage = get_storage(request)
    name = request.matchdict["name"]
    if request.registry.sessup_settings.upload.s3_download == "redirect" and isinstance(storage, S3Storage):
        return _redirect(request, storage, name)
    file = storage.open_download(name)
    if file is None:
        raise NotFound("No such file")
    try:
        meta = file.metadata
        media_type, inline = names.served_type(name)
        response = Response(conditional_response=True, content_type=media_type)
        response.app_iter = _FileIter(file)
    except BaseException:
        file.close()
        raise
    response.content_length = file.size
    response.last_modified = file.modified
    sha = meta.get("sha256")
    response.etag = sha if isinstance(sha, str) and sha else f"{file.size:x}-{int(file.modified * 1e9):x}"
    filename = meta.get("filename") if isinstance(meta.get("filename"), str) else ""
    response.headers["Content-Disposition"] = names.content_disposition(
        "inline" if inline else "attachment", names.sanitize_filename(filename) or name)
    _safety_headers(response)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Cache-Control"] = "private, no-cache"
    return rfc9110_download(request, response, file.size)


def _redirect(request: Request, storage: S3Storage, name: str) -> Response:
    """``sessup.upload.s3.download = redirect``: a presigned URL of the bucket,
    valid for ``sessup.upload.s3.url_expiry`` seconds, whose answer is always an
    attachment of the served type (the bucket cannot add nosniff or a CSP)."""
    found = storage.open_download(name)  # one HeadObject: the file exists, and its metadata
    if found is None:
        raise NotFound("No such file")
    found.close()
    meta = found.metadata
    media_type, _ = names.served_type(name)
    filename = meta.get("filename") if isinstance(meta.get("filename"), str) else ""
    url = storage.presigned_download(name, content_type=media_type, disposition=names.content_disposition(
        "attachment", names.sanitize_filename(filename) or name))
    response = Response(status=302)
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"  # the URL expires; never reuse this answer
    response.headers["Referrer-Policy"] = "no-referrer"
    _safety_headers(response)
    return response


def includeme(config: Configurator) -> None:
    """The upload routes, under the include's ``route_prefix``; needs ``sessup.upload.path``
    (or ``sessup.upload.storage = s3``)."""
    values = ensure_base(config)
    storage = upload_storage(config.registry)
    try:
        swept = storage.sweep(values.upload.temp_max_age)
    except StorageUnavailable:
        # Object storage down at start-up: serve anyway (uploads answer 503
        # until it is back); the sweep command or the next start-up cleans up.
        log.warning("could not sweep the upload storage at start-up")
        swept = 0
    if swept:
        log.info("removed %d stale temporary upload file(s)", swept)
    # The upload view checks CSRF itself, from the header before the body is
    # read, or from the csrf_token field as the body streams (never request.POST).
    if values.routes.upload:
        add_route_views(config, GROUP, "sessup.upload", values.routes.upload, {"POST": upload})
    add_route_views(config, GROUP, "sessup.upload_download", values.upload.url_prefix.rstrip("/") + "/{name}",
                    {("GET", "HEAD"): download})
