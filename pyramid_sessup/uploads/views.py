"""``POST /upFile`` (streaming upload) and ``GET /uploads/{name}`` (safe download).

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

from ..errors import error_response, wants_json
from ..exceptions import MalformedMultipart
from . import names
from .pipeline import CSRF_FIELD, get_storage, receive_upload
from .preconditions import rfc9110_download
from .storage import NAME_PATTERN, UploadStorage

log = logging.getLogger(__name__)

#: Types a browser may show inline: they cannot run script in our origin.
#: Everything else (HTML and SVG above all) is served as an attachment of
#: type application/octet-stream.
INLINE_SAFE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)

_BLOCK_SIZE = 256 * 1024



def download_path(request: Request, name: str) -> str:
    """The URL path of stored file ``name``.

    Built by hand rather than with ``request.route_path``: Pyramid caches every
    quoted path segment for good, and stored names are random, so route_path
    would grow the process by a few hundred bytes per upload.  Stored names
    match :data:`~.storage.NAME_PATTERN`, which needs no quoting.
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError("not a stored file name")
    prefix = request.registry.sessup_settings["upload.url_prefix"].rstrip("/")
    return f"{request.script_name}{prefix}/{name}"

def upload(request: Request) -> Response:
    """Receive one or more files in ``sessup.upload.field``; answer the URL
    path of the first (text) or every file's details (JSON)."""
    values = request.registry.sessup_settings
    parsed = receive_upload(request)
    if not parsed.files:
        parsed.discard()
        raise MalformedMultipart(f"No file was uploaded in field {values['upload.field']!r}")
    parsed.commit()
    urls = [download_path(request, f.name) for f in parsed.files]
    if wants_json(request):
        fields: dict[str, list[str]] = {}
        for key, value in parsed.fields:
            if key != CSRF_FIELD:
                fields.setdefault(key, []).append(value)
        body: dict[str, Any] = {
            "files": [
                {"field": f.field, "filename": f.filename, "path": f.name, "url": url, "size": f.size,
                 "sha256": f.sha256, "content_type": f.content_type}
                for f, url in zip(parsed.files, urls)
            ],
            "fields": fields,
        }
        response = Response(json_body=body)
    else:
        response = Response(body=urls[0].encode("utf-8"), content_type="text/plain", charset="utf-8")
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
        return error_response(request, 404, "No such file")
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
    values = config.registry.sessup_settings
    storage = UploadStorage(values["upload.path"], fsync=values["upload.fsync"])
    config.registry.sessup_upload_storage = storage
    swept = storage.sweep(values["upload.temp_max_age"])
    if swept:
        log.info("removed %d stale temporary upload file(s)", swept)
    prefix = values["upload.url_prefix"].rstrip("/")
    config.add_route("sessup.upload", "/upFile")
    config.add_route("sessup.upload_download", prefix + "/{name}")
    # require_csrf=False: Pyramid's check would parse the whole body through
    # request.POST; the pipeline checks the token itself (header first).
    config.add_view(upload, route_name="sessup.upload", request_method="POST", require_csrf=False)
    config.add_view(download, route_name="sessup.upload_download", request_method=("GET", "HEAD"))
