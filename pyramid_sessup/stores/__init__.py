"""Session stores, selected by ``sessup.session.store``."""
from __future__ import annotations

from importlib import import_module
from typing import Any, Mapping

from .base import SessionStore

#: store name -> "module:Class"; imported only when chosen, so redis and
#: psycopg are needed only by the apps that use them.
STORES = {
    "memory": "pyramid_sessup.stores.memory:MemoryStore",
    "file": "pyramid_sessup.stores.file:FileStore",
    "redis": "pyramid_sessup.stores.redis:RedisStore",
    "postgresql": "pyramid_sessup.stores.postgresql:PostgresStore",
}


def make_store(values: Mapping[str, Any]) -> SessionStore:
    """Build the store named by the parsed settings ``values`` (see :func:`parse_settings`)."""
    module_name, _, class_name = STORES[values["session.store"]].partition(":")
    cls = getattr(import_module(module_name), class_name)
    return cls.from_settings(values)
