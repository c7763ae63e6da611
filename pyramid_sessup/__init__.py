"""pyramid_sessup: sessions and file uploads for Pyramid, done properly.

``config.include("pyramid_sessup")`` sets the session factory from the
``sessup.*`` settings (and renders the add-on's own errors); nothing else
app-wide.  The route groups are separate includes, each honouring
``route_prefix``:

* ``pyramid_sessup.session_api``: ``/csrf``, ``/session``, ``/session/info``,
  ``/session/regenerate``, ``/session/destroy``;
* ``pyramid_sessup.uploads``: ``/upFile`` and ``/uploads/{name}``;
* ``pyramid_sessup.tus``: the resumable-upload endpoint ``/files/``.

Apps that configure in Python use :class:`SessupSessionFactory` instead.
The demo application (``pserve development.ini``) is
:func:`pyramid_sessup.demo.main`; the add-on never imports it.
"""
from __future__ import annotations

from typing import Any

from pyramid.config import Configurator

from .factory import SessupSessionFactory
from .settings import SessupSettings, parse_settings

__all__ = ["includeme", "get_sessup_settings", "SessupSessionFactory", "STATIC"]

#: Asset spec of the add-on's browser scripts and styles (``sessup-upload.js``,
#: ``sessup-tus.js``, ``sessup.css``): ``config.add_static_view("sessup-static", STATIC)``.
STATIC = "pyramid_sessup:static/"


def get_sessup_settings(registry: Any) -> SessupSettings:
    """The parsed ``sessup.*`` settings of an application."""
    return registry.sessup_settings


def includeme(config: Configurator) -> None:
    """Set the session factory from the ``sessup.*`` settings.

    Raises :class:`pyramid.exceptions.ConfigurationError` naming the key for
    any unknown or ill-typed setting.  The host's CSRF policy and defaults are
    left as the host set them.
    """
    from .session import session_factory_from_values
    from .stores import make_store

    values = parse_settings(config.get_settings())
    config.registry.sessup_settings = values
    store = make_store(values)
    config.registry.sessup_store = store
    config.set_session_factory(session_factory_from_values(values, store))
    config.include(".errors")
