"""Session stores, selected by ``sessup.session.store``."""
from __future__ import annotations

from importlib import import_module
from typing import Callable

from pyramid.exceptions import ConfigurationError

from ..settings import SessupSettings
from .base import SessionStore

#: store name -> "module:Class"; imported only when chosen, so redis and
#: psycopg are needed only by the apps that use them.
STORES = {
    "memory": "pyramid_sessup.stores.memory:MemoryStore",
    "file": "pyramid_sessup.stores.file:FileStore",
    "redis": "pyramid_sessup.stores.redis:RedisStore",
    "postgresql": "pyramid_sessup.stores.postgresql:PostgresStore",
}

#: store name -> (driver module, the extra that installs it).
DRIVERS = {"redis": ("redis", "redis"), "postgresql": ("psycopg", "postgresql")}


def make_store(values: SessupSettings) -> SessionStore:
    """Build the store named by the parsed settings ``values`` (see :func:`parse_settings`),
    wrapped in :class:`~pyramid_sessup.stores.encrypted.EncryptedStore` when
    ``sessup.session.encrypt`` is on."""
    wrap = _encryption(values)  # checked first: no connection pool is built for a start-up that fails
    store = make_inner_store(values)
    return wrap(store) if wrap is not None else store


def encrypted_if_configured(values: SessupSettings, store: SessionStore) -> SessionStore:
    """``store`` itself, or wrapped for encryption at rest when ``sessup.session.encrypt`` is on."""
    wrap = _encryption(values)
    return wrap(store) if wrap is not None else store


def _encryption(values: SessupSettings) -> Callable[[SessionStore], SessionStore] | None:
    if not values.session.encrypt:
        return None
    try:
        from .encrypted import EncryptedStore
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "cryptography":
            raise
        raise ConfigurationError(
            "sessup.session.encrypt = true needs the cryptography package, which is not installed: "
            "pip install 'pyramid_sessup[encrypt]'") from None
    secrets = values.session.secret
    return lambda store: EncryptedStore(store, secrets)


def make_inner_store(values: SessupSettings) -> SessionStore:
    """The store named by ``sessup.session.store``, without encryption."""
    name = values.session.store
    module_name, _, class_name = STORES[name].partition(":")
    try:
        module = import_module(module_name)
    except ModuleNotFoundError as exc:
        driver, extra = DRIVERS.get(name, ("", ""))
        if not driver or (exc.name or "").partition(".")[0] != driver:
            raise
        raise ConfigurationError(
            f"sessup.session.store = {name} needs the {driver} driver, which is not installed: "
            f"pip install 'pyramid_sessup[{extra}]'") from None
    cls = getattr(module, class_name)
    return cls.from_settings(values)
