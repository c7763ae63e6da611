"""Resumable uploads: a tus 1.0.0 server (https://tus.io/protocols/resumable-upload)
beside ``/upFile``.

:mod:`.protocol` parses and formats the headers; :mod:`.state` defines an
upload's state and the store interface, which :mod:`.local` implements in the
upload directory (shared by every process of one directory) and
:mod:`.s3store` (with :mod:`.s3records` and :mod:`.s3join`) in the bucket of
``sessup.upload.storage = s3`` (shared by every machine); :mod:`.concat` joins
partial uploads and :mod:`.views` answers ``/files/``.  Finished uploads land
where ``/upFile`` results go, under the same generated names.

``config.include("pyramid_sessup.tus")`` adds the endpoint at
``sessup.routes.tus`` under the include's ``route_prefix``.
"""
from __future__ import annotations

from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    config.include(".views")
