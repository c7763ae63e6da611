"""``POST /upFile`` (streaming upload) and ``GET /uploads/{name}`` (safe download):
the route group ``config.include("pyramid_sessup.uploads")``.

``includeme`` also sweeps temporary files left by a crash (older than
``sessup.upload.temp_max_age``) when the application starts; the
``sessup-sweep`` command does the same on demand.
"""
from __future__ import annotations

import logging
import os
from typing import Any, BinaryIO, Iterator

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from ..csrf import CSRF_FIELD
from ..errors import wants_json
from ..exceptions import MalformedMultipart, NotFound
from ..routing import add_route_views, ensure_base
from ..urls import Answer, group_url
from . import names
from .pipeline import get_storage, receive_upload
from .preconditions import rfc9110_download
from .storage import NAME_PATTERN, UploadStorage, upload_storage

log = logging.getLogger(__name__)

#: Types a browser may show inline: they cannot run script in our origin.
#: Everything else (HTML and SVG above all) is served as an attachment of
#: type application/octet-stream.
INLINE_SAFE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)

_BLOCK_SIZE = 256 * 1024  # 256 KiB per read of a download

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
    """Body of a download; supports ranges by seeking (WebOb calls
    :meth:`app_iter_range` for ``Range`` requests) and always closes the file."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file

    def __iter__(self) -> Iterator[bytes]:
        return self.app_iter_range()

    def app_iter_range(self, start: int | None = None, stop: int | None = None) -> Iterator[bytes]:
        file = self.file
        try:
            if start:
                file.seek(start)
            remaining = None if stop is None else stop - (start or 0)
            while remaining is None or remaining > 0:
                data = file.read(_BLOCK_SIZE if remaining is None else min(_BLOCK_SIZE, remaining))
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            file.close()

    def close(self) -> None:
        self.file.close()


def download(request: Request) -> Response:
    """Serve a stored file so that it can never act as a page of this site."""
    storage: UploadStorage = get_storage(request)
    name = request.matchdict["name"]
    file = storage.open_stored(name)
    if file is None:
        raise NotFound("No such file")
    try:
        st = os.fstat(file.fileno())
        meta = storage.metadata(name) or {}
        media_type = names.guess_type(names.extension_of(name))
        inline = media_type in INLINE_SAFE_TYPES
        response = Response(conditional_response=True,
                            content_type=media_type if inline else "application/octet-stream")
        response.app_iter = _FileIter(file)
    except BaseException:
        file.close()
        raise
    response.content_length = st.st_size
    response.last_modified = st.st_mtime
    sha = meta.get("sha256")
    response.etag = sha if isinstance(sha, str) and sha else f"{st.st_size:x}-{st.st_mtime_ns:x}"
    filename = meta.get("filename") if isinstance(meta.get("filename"), str) else ""
    response.headers["Content-Disposition"] = names.content_disposition(
        "inline" if inline else "attachment", names.sanitize_filename(filename) or name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "sandbox"
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Cache-Control"] = "private, no-cache"
    return rfc9110_download(request, response, st.st_size)


def includeme(config: Configurator) -> None:
    """The upload routes, under the include's ``route_prefix``; needs ``sessup.upload.path``."""
    values = ensure_base(config)
    storage = upload_storage(config.registry)
    swept = storage.sweep(values.upload.temp_max_age)
    if swept:
        log.info("removed %d stale temporary upload file(s)", swept)
    # The upload view checks CSRF itself, from the header before the body is
    # read, or from the csrf_token field as the body streams (never request.POST).
    if values.routes.upload:
        add_route_views(config, GROUP, "sessup.upload", values.routes.upload, {"POST": upload})
    add_route_views(config, GROUP, "sessup.upload_download", values.upload.url_prefix.rstrip("/") + "/{name}",
                    {("GET", "HEAD"): download})
