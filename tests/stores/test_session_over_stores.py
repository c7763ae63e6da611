"""The session layer over every store, in process (WebTest): the semantics do
not depend on where sessions live."""
from __future__ import annotations

import logging
import os
import pickle
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import webtest

from pyramid_sessup.stores.base import SessionStore

from .backends import expire_now, plant


def store_of(client: webtest.TestApp) -> SessionStore:
    return client.app.registry.sessup_store


def only_id(store: SessionStore) -> str:
    ids = list(store.ids())
    assert len(ids) == 1
    return ids[0]


def test_views_count_and_one_record(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client()
    assert [client.get("/session").json["views"] for _ in range(3)] == [1, 2, 3]
    store = store_of(client)
    sid = only_id(store)
    assert store.load(sid, touch=False)["views"] == 3
    assert client.cookies["sessup"].startswith(sid + ".")
    other = webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com"})
    assert other.get("/session").json["views"] == 1
    assert store.count() == 2


def test_read_only_request_stores_nothing(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client()
    res = client.get("/session/info")
    assert res.json["new"] is True
    assert "Set-Cookie" not in res.headers
    assert store_of(client).count() == 0


def test_regenerate_kills_the_old_id(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client()
    client.get("/session")
    store = store_of(client)
    old = only_id(store)
    token = client.get("/csrf").json["csrf_token"]
    res = client.post("/session/regenerate", headers={"X-CSRF-Token": token})
    assert res.json == {"regenerated": True, "views": 1}
    new = only_id(store)
    assert new != old and store.load(old) is None
    assert client.get("/session").json["views"] == 2


def test_destroy_deletes_the_record(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client()
    client.get("/session")
    token = client.get("/csrf").json["csrf_token"]
    client.post("/session/destroy", headers={"X-CSRF-Token": token})
    assert store_of(client).count() == 0
    assert client.get("/session").json["views"] == 1


def test_expired_session_starts_afresh(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client()
    client.get("/session")
    store = store_of(client)
    old = only_id(store)
    expire_now(store, old)
    assert client.get("/session").json["views"] == 1
    assert only_id(store) != old


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


def test_planted_pickle_is_a_corrupt_session(make_client: Callable[..., webtest.TestApp], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Whoever can write to the store cannot run code: a new session, one log line."""
    client = make_client()
    client.get("/session")
    store = store_of(client)
    sid = only_id(store)
    marker = tmp_path / "unpickled"
    plant(store, sid, pickle.dumps(_Payload(marker), protocol=4))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert client.get("/session").json["views"] == 1
    assert not marker.exists()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "corrupt session record" in warnings[0].getMessage()
    assert not client.cookies["sessup"].startswith(sid + ".")  # never the planted ID again


def _parallel(n: int, fn: Callable[[int], Any]) -> list[Any]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = fn(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    return results


def _clone(client: webtest.TestApp) -> webtest.TestApp:
    twin = webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com"})
    twin.set_cookie("sessup", client.cookies["sessup"])
    return twin


def test_overlapping_requests_writing_different_keys_both_persist(
        make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client()
    client.get("/test/set/start")
    _parallel(8, lambda i: _clone(client).get(f"/test/set/k{i}?delay=0.05&value=v{i}"))
    data = store_of(client).load(only_id(store_of(client)), touch=False)
    assert {k: data[k] for k in data if k.startswith("k")} == {f"k{i}": f"v{i}" for i in range(8)}


def test_lock_keeps_every_increment(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client(**{"sessup.session.lock": "true"})
    client.get("/test/incr")
    _parallel(16, lambda i: _clone(client).get("/test/incr?delay=0.005"))
    assert client.get("/test/incr").json["count"] == 18


def test_lock_timeout_answers_503(make_client: Callable[..., webtest.TestApp]) -> None:
    client = make_client(**{"sessup.session.lock": "true", "sessup.session.lock_timeout": "0.2"})
    client.get("/test/incr")
    store = store_of(client)
    sid = only_id(store)
    token = store.acquire_lock(sid, 1)  # another request holds the session
    try:
        res = client.get("/test/incr", status=503)
        assert res.headers["Retry-After"]
    finally:
        store.release_lock(sid, token)
    assert client.get("/test/incr").json["count"] == 2
