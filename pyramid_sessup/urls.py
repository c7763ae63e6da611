"""The URLs pyramid_sessup emits: under the host's ``route_prefix``, from the
configured ``sessup.public_url``, never from the request's ``Host`` header.

Without ``sessup.public_url`` every emitted URL is a path (``SCRIPT_NAME`` plus
the route prefix plus the route), which a client resolves against the URL it
asked; WebOb would make such a ``Location`` absolute from ``Host``, so the
add-on answers with :class:`Answer`, which leaves it as it is.
"""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.request import Request
from pyramid.response import Response


class _RelativeLocation:
    """Keep ``Location`` as set (RFC 9110 allows a relative reference): WebOb
    would resolve it against the untrusted ``Host`` header."""

    _headerlist: list[tuple[str, str]]

    def _abs_headerlist(self, environ: dict[str, Any]) -> list[tuple[str, str]]:
        return list(self._headerlist)


class Answer(_RelativeLocation, Response):
    """A response whose ``Location`` is never rewritten from ``Host``."""


class SeeOther(_RelativeLocation, HTTPSeeOther):
    """303 redirect to a path or configured URL, never rewritten from ``Host``."""


def remember_prefix(config: Configurator, group: str) -> str:
    """Record the ``route_prefix`` a route group is included under (``""`` for none)."""
    prefix = (config.route_prefix or "").strip("/")
    prefix = "/" + prefix if prefix else ""
    prefixes = getattr(config.registry, "sessup_prefixes", None)
    if prefixes is None:
        prefixes = config.registry.sessup_prefixes = {}
    prefixes[group] = prefix
    return prefix


def base_url(request: Request) -> str:
    """``sessup.public_url`` when configured, else the request's ``SCRIPT_NAME``."""
    values = getattr(request.registry, "sessup_settings", None)
    public = values.public_url if values else None
    return public if public else request.script_name


def group_url(request: Request, group: str, path: str) -> str:
    """The URL (a path unless ``sessup.public_url`` is set) of ``path`` in route group ``group``.

    Built by hand rather than with ``request.route_path``: Pyramid caches every
    quoted path segment for good, and upload names and ids are random, so
    route_path would grow the process by a few hundred bytes per upload.
    """
    prefixes = getattr(request.registry, "sessup_prefixes", {})
    return f"{base_url(request)}{prefixes.get(group, '')}{path}"
