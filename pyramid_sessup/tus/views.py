"""The tus 1.0.0 endpoint: ``/files/`` (creation) and ``/files/{id}``.

``OPTIONS``
    Discovery: ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size``
    (``sessup.upload.max_file_size``), ``Tus-Checksum-Algorithm``.
``POST /files/``
    creation (``Upload-Length`` or ``Upload-Defer-Length: 1``,
    ``Upload-Metadata`` with ``filename``/``filetype``),
    creation-with-upload, and concatenation (``Upload-Concat: partial``, or
    ``final;<urls>`` to join finished partials: :mod:`.concat`).
``HEAD /files/{id}``
    ``Upload-Offset``, ``Upload-Length``, ``Upload-Expires``; once finished
    also ``Sessup-File-Url``, ``Sessup-File-Path`` and ``Sessup-File-Sha256``.
``PATCH /files/{id}``
    Append at ``Upload-Offset`` (``application/offset+octet-stream``), with an
    optional ``Upload-Checksum`` (sha1, sha256) for the chunk, and
    ``Upload-Length`` once for an upload whose length was deferred.  A final
    upload cannot be patched (403).
``DELETE /files/{id}``
    termination.
``GET /files/{id}``
    Not tus: the result as JSON, shaped like one file of ``/upFile``'s answer.

**Ownership.**  An upload belongs to the browser that created it: to its
CSRF visitor nonce (the ``<session name>_csrf`` cookie of
:mod:`pyramid_sessup.csrf`, set by the creation request if absent), whose hash
the upload records.  Nothing is written to the session store.  Every other
request must come with that cookie, otherwise the upload does not exist for it
(404), whoever knows the URL.  Login and logout (``regenerate()``,
``invalidate()``) draw a new nonce, so uploads started before are no longer
reachable from that browser.  :func:`owns` is the one ownership check, for
plain, partial and final uploads alike.

**CSRF.**  These views run with ``require_csrf=False`` and take no CSRF
token: every request except ``OPTIONS`` must carry ``Tus-Resumable: 1.0.0``
(412 otherwise), and PATCH bodies are ``application/offset+octet-stream``.
Neither can be sent cross-site without a CORS preflight, which this endpoint
never grants (``OPTIONS`` answers no ``Access-Control-Allow-*`` header), so a
foreign page cannot make a visitor's browser create, append to or delete an
upload.  That is why the maintained tus clients work unchanged.  Over HTTPS a
foreign ``Origin`` is refused as well (Pyramid's origin check).

**Expiry.**  An unfinished upload expires ``sessup.upload.tus_expiry``
seconds after its creation or last PATCH (``Upload-Expires``): requests then
get 410 and the upload is removed; the store's sweep (run at start-up, and by
``sessup-sweep``) removes every expired one.  After removal it is simply
unknown (404).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

from ..csrf import check_origin, visitor_nonce
from ..errors import fill_error
from ..exceptions import SessupError
from ..routing import ensure_base
from ..uploads import names, quota
from ..uploads.body import body_length, iter_body
from ..uploads.storage import storage_error_message, upload_storage
from ..uploads.views import download_path
from ..urls import Answer, group_url, remember_prefix
from .concat import create_final
from .protocol import (
    OFFSET_OCTET_STREAM,
    TUS_VERSION,
    TusError,
    check_version,
    creation_length,
    discovery_headers,
    http_date,
    parse_checksum,
    parse_concat,
    parse_length,
    parse_metadata,
    state_headers,
)
from .state import FINAL, PARTIAL, Busy, Gone, TusStore, UploadInfo, make_tus_store, sweep

log = logging.getLogger(__name__)

#: Bytes read from the request body per step.  Measured with bench/tus_bench.py
#: (1 GiB in 8 MiB PATCHes): 1 MiB blocks cost about 12 MiB of peak RSS over
#: idle (each waitress thread's allocator keeps one), 256 KiB about 4 MiB, at
#: the same throughput.
READ_BLOCK = 256 * 1024

ROUTE_COLLECTION = "sessup.tus"
ROUTE_UPLOAD = "sessup.tus_upload"
GROUP = "tus"

__all__ = ["includeme", "get_tus_store", "sweep", "upload_url"]


def get_tus_store(request: Request) -> TusStore:
    """The :class:`TusStore` of the application."""
    return request.registry.sessup_tus_store


# -- helpers ----------------------------------------------------------------------------------


def _answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
    response = Answer(status=status, body=body)
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if not body:
        response.content_type = None  # type: ignore[assignment]
    return response


def _error(request: Request, exc: SessupError) -> Response:
    response = fill_error(Answer(), request, exc)
    response.headers["Tus-Resumable"] = TUS_VERSION
    return response


def _owner(request: Request) -> str | None:
    """The visitor nonce new uploads are created with, if the browser has one."""
    return visitor_nonce(request)


def owns(request: Request, info: UploadInfo) -> bool:
    """The one ownership check: was ``info`` created by this browser (its visitor nonce)?"""
    return info.owned_by(visitor_nonce(request))


def _find(request: Request, upload_id: str) -> UploadInfo:
    """The caller's upload, or 404 (unknown, or someone else's) / 410 (expired)."""
    store = get_tus_store(request)
    info = store.load(upload_id)
    if info is None or not owns(request, info):
        raise TusError(404, "No such upload")
    if info.expired():
        store.discard_if_expired(info)
        raise TusError(410, "The upload expired")
    return info


def _state_headers(request: Request, info: UploadInfo) -> dict[str, str]:
    headers = state_headers(info)
    if info.done and info.concat != PARTIAL:
        headers["Sessup-File-Url"] = _file_url(request, info)
        headers["Sessup-File-Path"] = info.name
        headers["Sessup-File-Sha256"] = info.sha256
    return headers


def _file_url(request: Request, info: UploadInfo) -> str:
    return download_path(request, info.name)


def _body_blocks(request: Request, room: int, max_chunk: int | None, bound: str = "Upload-Length") -> Iterator[bytes]:
    """The PATCH body in blocks, never more than ``room`` bytes (the rest of
    ``bound``: ``Upload-Length``, or the size limit while the length is
    deferred).  Raises 413 past it (before reading, when ``Content-Length``
    says so) and :class:`ConnectionError` on a short body."""
    try:
        length = body_length(request.environ)
    except ValueError:
        raise TusError(400, "Invalid Content-Length") from None
    if length > 0:
        _check_room(length, room, max_chunk, bound)

    def blocks() -> Iterator[bytes]:
        seen = 0
        for block in iter_body(request.environ, length, READ_BLOCK):
            seen += len(block)
            if length < 0:  # no declared length: count as the bytes come
                _check_room(seen, room, max_chunk, bound)
            yield block

    return blocks()


def _check_room(size: int, room: int, max_chunk: int | None, bound: str) -> None:
    if max_chunk is not None and size > max_chunk:
        raise TusError(413, f"A chunk may be at most sessup.upload.tus_max_chunk_size ({max_chunk} bytes)")
    if size > room:
        raise TusError(413, f"The body goes past {bound} ({room} bytes left)")


def _has_body(request: Request) -> bool:
    raw = (request.environ.get("CONTENT_LENGTH") or "").strip()
    if raw:
        return raw != "0"
    # No Content-Length: a chunked body on a server that streams it (waitress
    # sets wsgi.input_terminated on every request, but always with a length).
    return bool(request.environ.get("wsgi.input_terminated")) and _content_type(request) == OFFSET_OCTET_STREAM


def _content_type(request: Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


def _write(request: Request, store: TusStore, info: UploadInfo, declared: int | None = None) -> None:
    """Append the request body to ``info`` (lock held) and commit when complete.
    ``declared``: the length a PATCH declares for a deferred upload (checked
    already), recorded only with the chunk."""
    values = request.registry.sessup_settings
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    length = info.length if info.length is not None else declared
    if length is None:  # deferred: held to the size limit as the bytes arrive
        limit = values.upload.max_file_size
        blocks = _body_blocks(request, limit - info.offset, values.upload.tus_max_chunk_size,
                              f"sessup.upload.max_file_size ({limit} bytes)")
    else:
        blocks = _body_blocks(request, length - info.offset, values.upload.tus_max_chunk_size)
    if declared is not None:
        # Recorded only with the chunk: a refused chunk is never saved, and the
        # store must know whether this chunk ends the upload.
        info.length = declared
    result = store.append(info, blocks, checksum=checksum)
    store.touch(info)
    if info.offset == info.length:
        store.complete(info, request)
    else:
        store.save(info)
    if result.truncated_body:
        raise TusError(400, f"The request body ended early; {result.written} bytes were kept",
                       {"Upload-Offset": str(info.offset)})


def upload_url(request: Request, upload_id: str) -> str:
    """The URL of upload ``upload_id``: a path under the route prefix, or an
    absolute URL from ``sessup.public_url``; never from ``Host``."""
    return group_url(request, GROUP, f"{request.registry.sessup_settings.routes.tus}/{upload_id}")


# -- views ------------------------------------------------------------------------------------


def options(request: Request) -> Response:
    return _answer(204, discovery_headers(request.registry.sessup_settings.upload.max_file_size))


def create(request: Request) -> Response:
    """creation, creation-with-upload, creation-defer-length, concatenation."""
    values = request.registry.sessup_settings
    limit = values.upload.max_file_size
    concat = parse_concat(request.headers.get("Upload-Concat"), values.upload.tus_max_parts)
    final = concat is not None and concat.final
    length = creation_length(request.headers.get("Upload-Length"), request.headers.get("Upload-Defer-Length"),
                             final=final, limit=limit)
    raw_meta = request.headers.get("Upload-Metadata") or ""
    meta = parse_metadata(raw_meta)
    filename = names.sanitize_filename(meta.get("filename") or meta.get("name") or "")
    ext = names.extension_of(filename)
    media_type = names.guess_type(ext)
    shown = filename or "(unnamed)"
    # A partial upload is never stored as a file of its own: its final upload is checked.
    partial = concat is not None and not final
    if not partial and not names.extension_allowed(ext, values.upload.allowed_extensions):
        raise TusError(415, f"File {shown!r}: extension {ext or '(none)'!r} is not in "
                       f"sessup.upload.allowed_extensions")
    if not partial and not names.type_allowed(media_type, values.upload.allowed_types):
        raise TusError(415, f"File {shown!r}: type {media_type} is not in sessup.upload.allowed_types")
    with_body = _has_body(request)
    client_type = meta.get("filetype") or meta.get("type") or ""
    attrs: dict[str, Any] = {
        "filename": filename, "filetype": client_type[:255], "metadata": raw_meta.strip(),
        "content_type": media_type, "extension": names.stored_extension(ext, values.upload.allowed_extensions)}
    if concat is not None and concat.final:
        return _create_final(request, concat.urls, length, with_body, attrs)
    if with_body and _content_type(request) != OFFSET_OCTET_STREAM:
        raise TusError(415, f"A creation request with a body needs Content-Type: {OFFSET_OCTET_STREAM}")
    if with_body:
        parse_checksum(request.headers.get("Upload-Checksum"))  # 400 before anything is created

    # Counted at creation, before any state exists: creating uploads (even
    # empty or never finished ones) cannot get past the quota.  A partial
    # upload counts its bytes; its final upload counts the file.
    quota.charge(request, 0 if partial else 1, length or 0)
    token = visitor_nonce(request, create=True)
    assert token is not None
    store = get_tus_store(request)
    info = store.create(owner_token=token, length=length, concat=PARTIAL if partial else "", **attrs)
    location = upload_url(request, info.id)
    if not with_body and info.length != 0:  # nothing more to do (and nobody else knows the id yet)
        return _answer(201, {"Location": location, **_state_headers(request, info)})
    try:
        with store.locked(info.id) as info:
            if with_body:
                _write(request, store, info)
            else:
                store.complete(info, request)
    except TusError as exc:
        if exc.status == 400 and "Upload-Offset" in exc.headers:
            exc.headers["Location"] = location  # body cut short: the upload keeps what arrived
            raise
        store.remove(info.id)
        raise
    except BaseException:
        store.remove(info.id)  # (a refused file is already gone with its upload)
        raise
    return _answer(201, {"Location": location, **_state_headers(request, info)})


def _create_final(request: Request, urls: tuple[str, ...], length: int | None, with_body: bool,
                  attrs: dict[str, Any]) -> Response:
    """``Upload-Concat: final;<urls>``: join the caller's finished partial uploads."""
    if with_body:
        raise TusError(400, "A final upload (Upload-Concat: final) takes no body")
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    token = _owner(request)
    if token is None:  # no upload of this caller exists at all
        raise TusError(400, "Upload-Concat: no partial upload of yours exists")
    values = request.registry.sessup_settings
    # Partial URLs name this endpoint: as this request reached it, or as its Locations spell it.
    collections = (request.path.rstrip("/"), urlsplit(upload_url(request, "")).path.rstrip("/"))
    quota.charge(request, 1, 0)  # the file; its partials counted their bytes
    info = create_final(get_tus_store(request), owner_token=token, owns=lambda part: owns(request, part),
                        urls=urls, collection_paths=collections, limit=values.upload.max_file_size,
                        declared_length=length, checksum=checksum, request=request, **attrs)
    return _answer(201, {"Location": upload_url(request, info.id), **_state_headers(request, info)})


def head(request: Request) -> Response:
    info = _find(request, request.matchdict["id"])
    headers = _state_headers(request, info)
    if info.metadata:
        headers["Upload-Metadata"] = info.metadata
    return _answer(200, headers)


def patch(request: Request) -> Response:
    if _content_type(request) != OFFSET_OCTET_STREAM:
        raise TusError(415, f"PATCH needs Content-Type: {OFFSET_OCTET_STREAM}")
    offset = parse_length(request.headers.get("Upload-Offset"), "Upload-Offset")
    parse_checksum(request.headers.get("Upload-Checksum"))
    raw_length = request.headers.get("Upload-Length")  # creation-defer-length: declared once, by a PATCH
    declared = None if raw_length is None else parse_length(raw_length, "Upload-Length")
    info = _find(request, request.matchdict["id"])
    store = get_tus_store(request)
    try:
        with store.locked(info.id) as info:
            if info.concat == FINAL:
                raise TusError(403, "A final upload (Upload-Concat: final) cannot be patched")
            if info.expired():
                raise TusError(410, "The upload expired")
            if offset != info.offset:
                raise TusError(409, f"Upload-Offset {offset} does not match the upload's offset {info.offset}",
                               {"Upload-Offset": str(info.offset)})
            if declared is not None:
                store.declare_length(info, declared, request.registry.sessup_settings.upload.max_file_size)
            if info.done:
                if _has_body(request):
                    raise TusError(413, "The upload is already complete")
            else:
                _write(request, store, info, declared)
    except Busy:
        raise TusError(409, "Another request is writing to this upload") from None
    except Gone:
        raise TusError(404, "No such upload") from None
    return _answer(204, _state_headers(request, info))


def delete(request: Request) -> Response:
    info = _find(request, request.matchdict["id"])
    store = get_tus_store(request)
    try:
        with store.locked(info.id) as info:
            store.terminate(info)
    except Busy:
        raise TusError(409, "Another request is writing to this upload") from None
    except Gone:
        raise TusError(404, "No such upload") from None
    return _answer(204)


def result(request: Request) -> Response:
    """The upload as JSON: while unfinished its offset, then what ``/upFile``
    answers for one file."""
    info = _find(request, request.matchdict["id"])
    if info.done and info.concat != PARTIAL:
        body: dict[str, Any] = {"complete": True, "filename": info.filename, "stored_name": info.name,
                                "url": _file_url(request, info), "size": info.length, "sha256": info.sha256,
                                "content_type": info.content_type}
    else:
        body = {"complete": False, "offset": info.offset, "length": info.length,
                "expires": http_date(info.expires)}
        if info.concat:
            body["concat"] = info.concat
    response = Answer(json_body=body)
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Cache-Control"] = "no-store"
    return response


_COLLECTION: dict[str, Callable[[Request], Response]] = {"OPTIONS": options, "POST": create}
_UPLOAD: dict[str, Callable[[Request], Response]] = {
    "OPTIONS": options, "HEAD": head, "PATCH": patch, "DELETE": delete, "GET": result}


def _dispatch(table: dict[str, Callable[[Request], Response]]) -> Callable[[Request], Response]:
    allowed = ", ".join(table)

    def view(request: Request) -> Response:
        handler = table.get(request.method)
        try:
            if handler is None:
                raise TusError(405, f"Method {request.method} is not allowed here", {"Allow": allowed})
            if request.method != "OPTIONS":
                if request.method != "GET":
                    check_version(request.headers.get("Tus-Resumable"))
                    check_origin(request)
            return handler(request)
        except SessupError as exc:
            return _error(request, exc)
        except OSError as exc:
            # The upload directory refused a write (full, read-only): a clear 507, not a 500.
            message = storage_error_message(exc)
            if message is None:
                raise
            log.error("resumable upload refused: %s (%s)", message, exc)
            return _error(request, TusError(507, message))

    return view


def includeme(config: Configurator) -> None:
    """Add the tus routes (``sessup.routes.tus``, under the include's
    ``route_prefix``) and sweep expired uploads."""
    values = ensure_base(config)
    storage = upload_storage(config.registry)
    if not values.routes.tus:
        return
    # Unfinished uploads are kept where finished ones go: the upload
    # directory's .tus, or the bucket (so that any machine can continue them).
    store = make_tus_store(storage, values)
    config.registry.sessup_tus_store = store
    swept = store.sweep()
    if swept:
        log.info("removed %d expired tus upload(s)", swept)
    path = values.routes.tus
    # require_csrf=False (set by add_route_views): see the module docstring (CSRF).
    # Every method goes to one dispatcher, which answers 405 itself with tus headers.
    config.add_route(ROUTE_COLLECTION, path + "{slash:/?}")
    config.add_route(ROUTE_UPLOAD, path + "/{id}")
    remember_prefix(config, GROUP)
    config.add_view(_dispatch(_COLLECTION), route_name=ROUTE_COLLECTION, require_csrf=False)
    config.add_view(_dispatch(_UPLOAD), route_name=ROUTE_UPLOAD, require_csrf=False)
