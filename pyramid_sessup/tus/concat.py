"""Concatenation: a final upload joins finished partial uploads, in order.

``Upload-Concat: partial`` uploads are ordinary uploads of the
:class:`~.state.TusStore` that are never committed on their own;
``Upload-Concat: final;<url> <url>`` names them.  :func:`create_final` then,
holding every partial's lock:

1. refuses what cannot be joined: an upload that is unknown or not the
   caller's (400, the same answer for both), not partial, unfinished or named
   twice (400), expired (410), being written (409), data damaged (410), a
   total over ``sessup.upload.max_file_size`` (413);
2. has the store join the partials' bytes into the final upload
   (:meth:`~.state.TusStore.join`: a copy inside the kernel on disk, copies
   inside the service in a bucket), reading the result once for its sha256
   (and the client's ``Upload-Checksum`` of the whole file, if sent: 460 on
   a mismatch);
3. commits it exactly like any finished upload (:meth:`.TusStore.complete`),
   then removes the partials.

Any refusal or error before the commit leaves the partials as they were and
nothing else behind, so the client can send the final request again.  A
crash between the commit and the removal leaves finished partials that
expire and are swept like any abandoned upload.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlsplit

from pyramid.request import Request

from .protocol import TusError
from .state import FINAL, ID_PATTERN, PARTIAL, Busy, Gone, TusStore, UploadInfo


def partial_ids(urls: Sequence[str], collection_paths: Sequence[str]) -> list[str]:
    """The upload ids named by ``Upload-Concat: final;...``: each URL (absolute,
    or a path) must be ``<collection path>/<id>``, with one of
    ``collection_paths``; none may repeat (400)."""
    ids: list[str] = []
    for url in urls:
        try:
            path = urlsplit(url).path
        except ValueError:
            path = ""
        parent, _, upload_id = path.rpartition("/")
        if parent not in collection_paths or not ID_PATTERN.fullmatch(upload_id):
            raise TusError(400, f"Upload-Concat: {url[:100]!r} is not an upload of this endpoint")
        if upload_id in ids:
            raise TusError(400, f"Upload-Concat names the upload {upload_id} twice")
        ids.append(upload_id)
    return ids


def create_final(store: TusStore, *, owner_token: str, owns: Callable[[UploadInfo], bool], urls: Sequence[str],
                 collection_paths: Sequence[str], limit: int, declared_length: int | None = None,
                 checksum: tuple[str, bytes] | None = None, request: Request | None = None,
                 **attrs: Any) -> UploadInfo:
    """Join the partial uploads named by ``urls`` into a new, finished upload
    owned by ``owner_token`` (see the module docstring).  ``owns`` is the
    caller's ownership check (the same as for every other request);
    ``attrs`` are the final upload's file name, type and metadata."""
    ids = partial_ids(urls, collection_paths)
    with ExitStack() as held:
        partials = [_take_partial(store, held, upload_id, owns) for upload_id in ids]
        total = sum(p.length or 0 for p in partials)
        if total > limit:
            raise TusError(413, f"The joined upload ({total} bytes) is larger than sessup.upload.max_file_size "
                           f"({limit} bytes)", {"Tus-Max-Size": str(limit)})
        if declared_length is not None and declared_length != total:
            raise TusError(400, f"Upload-Length {declared_length} does not match the partial uploads' "
                           f"total of {total} bytes")
        final = store.create(owner_token=owner_token, length=total, concat=FINAL, parts=list(urls), **attrs)
        try:
            with store.locked(final.id) as final:
                digest = store.join(final, partials, checksum)
                final.offset = total
                store.complete(final, request, digest=digest)
        except BaseException:
            try:
                with store.locked(final.id) as fresh:
                    store.terminate(fresh)
            except (Busy, Gone):  # pragma: no cover - nobody else knows its id
                pass
            raise
        for part in partials:  # their locks are still held: nobody saw them half-removed
            store.terminate(part)
    return final


def _take_partial(store: TusStore, held: ExitStack, upload_id: str, owns: Callable[[UploadInfo], bool]) -> UploadInfo:
    """Lock one named partial upload and check it can be joined."""
    unknown = TusError(400, f"Upload-Concat: no partial upload {upload_id} of yours exists")
    info = store.load(upload_id)
    if info is None or not owns(info):  # checked before locking: a busy foreign upload looks unknown too
        raise unknown
    try:
        info = held.enter_context(store.locked(upload_id))
    except Busy:
        raise TusError(409, f"The partial upload {upload_id} is being written or joined right now") from None
    except Gone:
        raise unknown from None
    if not owns(info):  # pragma: no cover - owners never change
        raise unknown
    if info.concat != PARTIAL:
        raise TusError(400, f"The upload {upload_id} was not created with Upload-Concat: partial")
    if info.expired():
        store.terminate(info)
        raise TusError(410, f"The partial upload {upload_id} expired")
    if not info.done or info.length is None or info.offset != info.length:
        raise TusError(400, f"The partial upload {upload_id} is unfinished ({info.offset} of "
                       f"{'?' if info.length is None else info.length} bytes)")
    return info
