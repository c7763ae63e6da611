"""Redis store specifics: native TTL, key layout, connection handling, outages."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis

from pyramid_sessup.exceptions import SessionLockTimeout, StoreUnavailable
from pyramid_sessup.settings import parse_settings
from pyramid_sessup.stores import make_store
from pyramid_sessup.stores.redis import RedisStore

from ..support import REDIS_URL, free_port
from .backends import in_thread
from .conftest import delete_redis_prefix

pytestmark = pytest.mark.redis


def new_sid() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def make(redis_namespace: str) -> Iterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def factory(**kw: Any) -> RedisStore:
        kw.setdefault("timeout", 100)
        kw.setdefault("key_prefix", redis_namespace)
        store = RedisStore(kw.pop("url", REDIS_URL), **kw)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


def test_key_layout_value_and_ttl(make: Callable[..., RedisStore], raw: redis.Redis, redis_namespace: str) -> None:
    store = make()
    sid = new_sid()
    store.create(sid, {"b": 1, "a": "x"})
    key = redis_namespace + sid
    assert raw.type(key) == b"string"
    assert raw.get(key) == b'{"a":"x","b":1}'  # compact JSON, sorted keys
    assert 95 <= raw.ttl(key) <= 100


def test_touch_and_load_refresh_ttl_without_rewriting(make: Callable[..., RedisStore], raw: redis.Redis,
                                                      redis_namespace: str) -> None:
    store = make()
    sid = new_sid()
    key = redis_namespace + sid
    store.create(sid, {"a": 1})
    for action in (lambda: store.touch(sid), lambda: store.load(sid)):
        raw.expire(key, 5)
        # Change the stored bytes behind the store's back: a touch that rewrote
        # the record would put its own copy back.
        raw.set(key, b'{"a":"outside"}', keepttl=True)
        action()
        assert 95 <= raw.ttl(key) <= 100
        assert raw.get(key) == b'{"a":"outside"}'
        raw.set(key, b'{"a":1}', keepttl=True)
    raw.expire(key, 5)
    assert store.load(sid, touch=False) == {"a": 1}
    assert raw.ttl(key) <= 5


def test_every_write_sets_the_ttl(make: Callable[..., RedisStore], raw: redis.Redis, redis_namespace: str) -> None:
    store = make()
    sid = new_sid()
    key = redis_namespace + sid
    store.create(sid, {"a": 1})
    raw.expire(key, 5)
    store.update(sid, {"b": 2}, [])
    assert raw.ttl(key) >= 95
    raw.expire(key, 5)
    store.replace(sid, {"c": 3})
    assert raw.ttl(key) >= 95


def test_wrong_type_at_key_is_a_corrupt_record(make: Callable[..., RedisStore], raw: redis.Redis,
                                               redis_namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    store = make()
    sid = new_sid()
    raw.hset(redis_namespace + sid, "a", "1")
    raw.expire(redis_namespace + sid, 60)
    with caplog.at_level(logging.WARNING, logger="pyramid_sessup.stores"):
        assert store.load(sid) is None
        assert store.update(sid, {"a": 2}, []) is None
    assert len([r for r in caplog.records if r.name == "pyramid_sessup.stores"]) == 2
    assert store.replace(sid, {"ok": 1}) is False  # nothing to overwrite
    assert raw.type(redis_namespace + sid) == b"hash"
    store.delete(sid)  # the way out: the ID becomes a tombstone
    assert store.load(sid) is None and store.create(sid, {"ok": 1}) is False


def test_prefix_with_glob_characters_matches_literally(make: Callable[..., RedisStore], raw: redis.Redis) -> None:
    base = f"sessup-test-{secrets.token_hex(4)}"
    tricky = make(key_prefix=base + "[*]?:")
    lookalike = make(key_prefix=base + "x*]?:")  # what the unescaped glob would also match
    try:
        mine, theirs = new_sid(), new_sid()
        tricky.create(mine, {"a": 1})
        lookalike.create(theirs, {"a": 1})
        assert list(tricky.ids()) == [mine]
        assert tricky.count() == 1
    finally:
        delete_redis_prefix(base)


def test_ids_skip_foreign_keys_under_the_prefix(make: Callable[..., RedisStore], raw: redis.Redis,
                                                redis_namespace: str) -> None:
    store = make()
    sid = new_sid()
    store.create(sid, {"a": 1})
    raw.set(redis_namespace + "not-a-session", b"{}", ex=60)
    raw.set(redis_namespace + sid + "x", b"{}", ex=60)
    assert list(store.ids()) == [sid]


def test_lock_is_bounded_in_time(make: Callable[..., RedisStore], raw: redis.Redis, redis_namespace: str) -> None:
    """A holder that never releases (crashed process) blocks others for lock_ttl, and no longer."""
    store = make(lock_ttl=0.5)
    sid = new_sid()
    taken = time.monotonic()
    store.acquire_lock(sid, 1)  # never released
    assert 0 < raw.pttl(redis_namespace + "lock:" + sid) <= 500  # Redis itself ends it
    with pytest.raises(SessionLockTimeout):
        store.acquire_lock(sid, 0.05)  # held while its TTL runs
    # The bound: the next holder gets it once the TTL is over (1.5 s spare for a busy machine).
    token = store.acquire_lock(sid, 0.5 + 1.5)
    assert time.monotonic() - taken >= 0.45  # and not before
    store.release_lock(sid, token)
    assert raw.exists(redis_namespace + "lock:" + sid) == 0


def test_lock_ttl_follows_lock_timeout_setting(redis_namespace: str) -> None:
    values = parse_settings({
        "sessup.session.secret": "x" * 40, "sessup.session.store": "redis",
        "sessup.session.url": REDIS_URL, "sessup.session.key_prefix": redis_namespace,
        "sessup.session.lock_timeout": "50", "sessup.session.pool_size": "3",
        "sessup.session.connect_timeout": "0.5", "sessup.session.socket_timeout": "0.7",
        "sessup.session.timeout": "42",
    })
    store = make_store(values)
    try:
        assert isinstance(store, RedisStore)
        assert store.lock_ttl_ms == 150_000
        assert store.timeout == 42
        assert store.key_prefix == redis_namespace
        assert store.pool.max_connections == 3
        kwargs = store.pool.connection_kwargs
        assert kwargs["socket_connect_timeout"] == 0.5
        assert kwargs["socket_timeout"] == 0.7
        assert kwargs["db"] == int(urlsplit(REDIS_URL).path.lstrip("/") or 0)  # the database the URL names
    finally:
        store.close()


def test_pool_is_bounded_and_waits(make: Callable[..., RedisStore]) -> None:
    """pool_size caps the connections; extra callers wait for one instead of failing."""
    store = make(pool_size=2)
    sids = [new_sid() for _ in range(10)]
    errors: list[BaseException] = []

    def work(sid: str) -> None:
        try:
            assert store.create(sid, {"a": 1})
            for _ in range(20):
                assert store.replace(sid, {"a": 1})
                assert store.load(sid) == {"a": 1}
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(sid,)) for sid in sids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(store.pool._connections) <= 2


def test_a_connection_killed_by_the_server_is_replaced(make: Callable[..., RedisStore], raw: redis.Redis) -> None:
    """After a Redis restart or idle kill, the next call reconnects instead of failing."""
    store = make(pool_size=1)
    sid = new_sid()
    store.create(sid, {"a": 1})
    conn_id = store.client.client_id()
    raw.client_kill_filter(_id=conn_id)
    assert store.load(sid) == {"a": 1}
    assert store.client.client_id() != conn_id


def _call_all(store: RedisStore) -> list[str]:
    """Call every operation; return the names of those that did NOT raise StoreUnavailable."""
    sid = new_sid()
    calls = {
        "load": lambda: store.load(sid),
        "load-peek": lambda: store.load(sid, touch=False),
        "create": lambda: store.create(sid, {"a": 1}),
        "update": lambda: store.update(sid, {"a": 1}, []),
        "replace": lambda: store.replace(sid, {"a": 1}),
        "touch": lambda: store.touch(sid),
        "delete": lambda: store.delete(sid),
        "lock": lambda: store.acquire_lock(sid, 0.5),
        "unlock": lambda: store.release_lock(sid, "token"),
        "ids": lambda: list(store.ids()),
        "count": lambda: store.count(),
        "ping": lambda: store.ping(),
    }
    survived = []
    for name, call in calls.items():
        try:
            call()
            survived.append(name)
        except StoreUnavailable:
            pass
    return survived


def test_refused_connection_raises_store_unavailable(make: Callable[..., RedisStore]) -> None:
    store = make(url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.3, socket_timeout=0.3)
    assert in_thread(lambda: _call_all(store)) == []
    with pytest.raises(StoreUnavailable):  # it prunes the user indexes: a down Redis is reported
        store.purge_expired()


def test_server_that_never_answers_raises_store_unavailable(make: Callable[..., RedisStore],
                                                            silent_server: int) -> None:
    """The read timeout (socket_timeout) applies: no call blocks forever."""
    store = make(url=f"redis://127.0.0.1:{silent_server}/0", connect_timeout=0.3, socket_timeout=0.3)
    assert in_thread(lambda: _call_all(store)) == []


def test_lock_timeout_message(make: Callable[..., RedisStore]) -> None:
    store = make()
    sid = new_sid()
    token = store.acquire_lock(sid, 1)
    with pytest.raises(SessionLockTimeout, match="0.1s"):
        store.acquire_lock(sid, 0.1)
    store.release_lock(sid, token)


def test_update_retries_on_conflict(make: Callable[..., RedisStore], raw: redis.Redis, redis_namespace: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that lands between our read and our EXEC is merged, not overwritten."""
    store = make()
    sid = new_sid()
    key = redis_namespace + sid
    store.create(sid, {"a": 1})
    from pyramid_sessup.stores import redis as redis_store

    real_loads = redis_store.loads
    interfered = []

    def loads_then_interfere(data: Any, sid_: str = "?") -> Any:
        result = real_loads(data, sid_)
        if not interfered:  # another process writes right after our GET
            interfered.append(True)
            raw.set(key, b'{"a":1,"other":true}', keepttl=True)
        return result

    monkeypatch.setattr(redis_store, "loads", loads_then_interfere)
    assert store.update(sid, {"mine": 2}, []) == {"a": 1, "other": True, "mine": 2}
    assert store.load(sid) == {"a": 1, "other": True, "mine": 2}


def test_invalid_url_is_a_configuration_error() -> None:
    from pyramid.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="sessup.session.url"):
        RedisStore("redis://127.0.0.1:port/0", timeout=10)
