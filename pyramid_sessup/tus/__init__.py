"""Resumable uploads: a tus 1.0.0 server (https://tus.io/protocols/resumable-upload)
beside ``/upFile``.

:mod:`.protocol` parses and formats the headers, :mod:`.state` keeps each
upload on disk (shared by every process of one upload directory) and
:mod:`.views` answers ``/files/``.  Finished uploads land in the same upload
directory, under the same generated names, as ``/upFile`` results.

``config.include("pyramid_sessup.tus")`` adds the endpoint at
``sessup.routes.tus`` under the include's ``route_prefix``.
"""
from __future__ import annotations

from pyramid.config import Configurator


def includeme(config: Configurator) -> None:
    config.include(".views")
