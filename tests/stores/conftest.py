"""Store fixtures: every store kind on a private namespace of the real servers.

Redis tests use database 15 and a random key prefix per test, and delete only
their own keys; PostgreSQL tests use a random table per test and drop it.
"""
from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import webtest

from pyramid_sessup.stores.base import SessionStore

from ..support import POSTGRES_URL, REDIS_URL, require_service

KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("file", id="file"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


def require_redis() -> None:
    url = urlsplit(REDIS_URL)
    require_service("Redis", url.hostname or "127.0.0.1", url.port or 6379)


def require_postgres() -> None:
    url = urlsplit(POSTGRES_URL)
    require_service("PostgreSQL", url.hostname or "127.0.0.1", url.port or 5432)


def random_prefix() -> str:
    return f"sessup-test-{secrets.token_hex(6)}:"


def random_table() -> str:
    return f"sessup_test_{secrets.token_hex(6)}"


def delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        escaped = "".join("\\" + c if c in "*?[]\\^" else c for c in prefix)
        keys = list(client.scan_iter(match=escaped + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def drop_postgres_table(table: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A fresh key prefix in the test Redis database; its keys are deleted afterwards."""
    require_redis()
    prefix = random_prefix()
    yield prefix
    delete_redis_prefix(prefix)


@pytest.fixture
def postgres_table() -> Iterator[str]:
    """A fresh table name in the test database; dropped afterwards."""
    require_postgres()
    table = random_table()
    yield table
    drop_postgres_table(table)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_factory(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., SessionStore]]:
    """``store_factory(timeout=60, **kw)``: a store of ``kind``; every store made by
    one test shares one backend namespace (like two app processes would)."""
    made: list[SessionStore] = []
    namespace: dict[str, Any] = {}
    if kind == "redis":
        namespace["key_prefix"] = request.getfixturevalue("redis_namespace")
    elif kind == "postgresql":
        namespace["table"] = request.getfixturevalue("postgres_table")

    def make(timeout: int = 60, **kw: Any) -> SessionStore:
        store: SessionStore
        if kind == "memory":
            from pyramid_sessup.stores.memory import MemoryStore

            store = MemoryStore(timeout=timeout)
        elif kind == "file":
            from pyramid_sessup.stores.file import FileStore

            store = FileStore(str(tmp_path / "sessions"), timeout=timeout)
        elif kind == "redis":
            from pyramid_sessup.stores.redis import RedisStore

            store = RedisStore(REDIS_URL, timeout=timeout, **{**namespace, **kw})
        else:
            from pyramid_sessup.stores.postgresql import PostgresStore

            store = PostgresStore(POSTGRES_URL, timeout=timeout, **{**namespace, **kw})
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(store_factory: Callable[..., SessionStore]) -> SessionStore:
    return store_factory()


@pytest.fixture
def store_settings(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The ``sessup.session.*`` settings of an app over a store of ``kind`` (private namespace)."""
    if kind == "memory":
        return {"sessup.session.store": "memory"}
    if kind == "file":
        return {"sessup.session.store": "file"}  # the settings fixture gives a per-test path
    if kind == "redis":
        return {"sessup.session.store": "redis", "sessup.session.url": REDIS_URL,
                "sessup.session.key_prefix": request.getfixturevalue("redis_namespace")}
    return {"sessup.session.store": "postgresql", "sessup.session.url": POSTGRES_URL,
            "sessup.session.table": request.getfixturevalue("postgres_table")}


@pytest.fixture
def make_client(settings: dict[str, Any], store_settings: dict[str, str]) -> Iterator[Callable[..., webtest.TestApp]]:
    """``make_client(**overrides)``: a WebTest client of the demo app over the store."""
    from . import app as app_module

    apps: list[Any] = []

    def make(**overrides: str) -> webtest.TestApp:
        app = app_module.main({}, **{**settings, **store_settings, **overrides})
        apps.append(app)
        return webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})

    yield make
    for app in apps:
        app.registry.sessup_store.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()
