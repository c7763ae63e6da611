"""SessionStore.modify_counter, the upload quotas' atomic counter, on every
store: atomic under concurrent writers, expiring, and never a session."""
from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pyramid_sessup.stores.base import SessionStore


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def add(amount: int) -> Callable[[dict[str, Any] | None], tuple[dict[str, Any], int]]:
    def fn(data: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
        value = (data or {}).get("n", 0) + amount
        return {"n": value}, value

    return fn


def read(data: dict[str, Any] | None) -> tuple[None, Any]:
    return None, data


def test_read_modify_write_and_read_only(store: SessionStore) -> None:
    key = new_key()
    assert store.modify_counter(key, read, 60) is None
    assert store.modify_counter(key, add(2), 60) == 2
    assert store.modify_counter(key, add(3), 60) == 5
    assert store.modify_counter(key, read, 60) == {"n": 5}
    assert store.modify_counter(new_key(), read, 60) is None


def test_concurrent_increments_lose_nothing(store_factory: Callable[..., SessionStore], kind: str) -> None:
    # Two store objects (as two processes would have; the memory store is one
    # process's), 8 threads each.
    stores = [store_factory()] if kind == "memory" else [store_factory(), store_factory()]
    key = new_key()
    rounds, threads_per_store = 25, 8
    errors: list[BaseException] = []

    def work(store: SessionStore) -> None:
        try:
            for _ in range(rounds):
                store.modify_counter(key, add(1), 60)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(threads_per_store)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert stores[0].modify_counter(key, read, 60) == {"n": rounds * threads_per_store * len(stores)}


def test_counters_expire(store: SessionStore) -> None:
    key = new_key()
    store.modify_counter(key, add(1), 0.3)
    assert store.modify_counter(key, read, 60) == {"n": 1}
    time.sleep(1.2)
    assert store.modify_counter(key, read, 60) is None
    assert store.modify_counter(key, add(1), 60) == 1  # starts afresh


def test_counters_are_never_sessions(store: SessionStore) -> None:
    before = sorted(store.ids())
    keys = [new_key() for _ in range(5)]
    for key in keys:
        store.modify_counter(key, add(1), 60)
    assert sorted(store.ids()) == before and store.count() == len(before)
    for key in keys:
        assert store.load(key[:43]) is None


def test_purge_removes_expired_counters_only(store: SessionStore) -> None:
    old, live = new_key(), new_key()
    store.modify_counter(old, add(1), 0.2)
    store.modify_counter(live, add(7), 60)
    time.sleep(1.2)
    store.purge_expired()
    assert store.modify_counter(old, read, 60) is None
    assert store.modify_counter(live, read, 60) == {"n": 7}


@pytest.mark.parametrize("key", ["", "../../etc/passwd", "ABC", "g" * 64, "a" * 65, "a" * 15, "lock:x"])
def test_malformed_keys_are_refused(store: SessionStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.modify_counter(key, add(1), 60)
