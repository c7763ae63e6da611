from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import webtest

from ..support import POSTGRES_URL, REDIS_URL, require_service
from .hostapp import GATES, LOADED, make_host_app

SECRET = "testing-secret-not-for-production-0123456789"


def _store_settings(name: str, tmp_path: Path) -> dict[str, str]:
    if name == "memory":
        return {"sessup.session.store": "memory"}
    if name == "file":
        return {"sessup.session.store": "file", "sessup.session.file.path": str(tmp_path / "sessions")}
    if name == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        return {"sessup.session.store": "redis", "sessup.session.url": REDIS_URL,
                "sessup.session.key_prefix": f"sessup-test-{uuid.uuid4().hex[:8]}:"}
    if name == "postgresql":
        require_service("PostgreSQL", "127.0.0.1", 5432)
        return {"sessup.session.store": "postgresql", "sessup.session.url": POSTGRES_URL,
                "sessup.session.table": f"sessup_test_{uuid.uuid4().hex[:8]}"}
    raise AssertionError(name)


STORES = ["memory", "file", "redis", "postgresql"]
STORE_MARKS = {"redis": [pytest.mark.redis], "postgresql": [pytest.mark.postgres]}


@pytest.fixture(params=[pytest.param(s, marks=STORE_MARKS.get(s, [])) for s in STORES])
def store_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def host_settings(store_name: str, tmp_path: Path) -> dict[str, str]:
    return {"sessup.session.secret": SECRET, **_store_settings(store_name, tmp_path)}


@pytest.fixture
def make_host(host_settings: dict[str, str]) -> Callable[..., webtest.TestApp]:
    apps: list[Any] = []

    def make(**overrides: str) -> webtest.TestApp:
        wsgi = make_host_app({**host_settings, **overrides})
        apps.append(wsgi)
        return webtest.TestApp(wsgi, extra_environ={"HTTP_HOST": "example.com"})

    yield make
    for wsgi in apps:
        store = wsgi.registry.sessup_store
        for sid in list(store.ids()):
            store.delete(sid)
        store.close()
    table = host_settings.get("sessup.session.table")
    if table and apps:
        import psycopg

        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


@pytest.fixture(autouse=True)
def _reset_gates() -> None:
    GATES.clear()
    LOADED.clear()
