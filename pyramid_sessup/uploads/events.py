"""``UploadStored``: the Pyramid event fired once files are stored for good.

Every upload path fires it after its files have their final names: ``/upFile``
(and any view calling :meth:`~pyramid_sessup.uploads.pipeline.ParsedUpload.commit`),
the deform form, and a tus upload's completion.  A host application adds
thumbnails, indexing or notifications with::

    from pyramid_sessup.uploads.events import UploadStored

    def on_stored(event):
        for f in event.files:
            index(f.name, f.filename, f.sha256)

    config.add_subscriber(on_stored, UploadStored)

Subscribers run in the request, after the files are stored: an exception
raised by one reaches the client as an error, but the files stay stored.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pyramid.request import Request

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import StoredFile


class UploadStored:
    """``files``: the :class:`~pyramid_sessup.uploads.pipeline.StoredFile`
    objects just stored (``name`` is their stored name); ``request``: the
    request that stored them."""

    def __init__(self, request: Request, files: Sequence[StoredFile]) -> None:
        self.request = request
        self.files = list(files)


def notify_stored(request: Request, files: Sequence[StoredFile]) -> None:
    """Fire :class:`UploadStored` for ``files`` (nothing when there are none)."""
    if files:
        request.registry.notify(UploadStored(request, files))
