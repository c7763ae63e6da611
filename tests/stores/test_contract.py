"""The SessionStore contract, run against every store: memory, file, the real
Redis and the real PostgreSQL."""
from __future__ import annotations

import json
import logging
import os
import pickle
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from pyramid_sessup.exceptions import SessionLockTimeout
from pyramid_sessup.stores.base import SessionStore, dumps

from .backends import expire_now, expired_left, plant, raw_record

MakeStore = Callable[..., SessionStore]


def new_sid() -> str:
    return secrets.token_urlsafe(32)


#: Values that must come back exactly: JSON's corner cases.
RECORD = {
    "int": 7,
    "big": 2**62 + 1,
    "float": 1764100000.123456,
    "neg": -0.5,
    "text": "héllo \u2603 \"quoted\" \\ back",
    "none": None,
    "bools": [True, False],
    "empty_list": [],
    "empty_dict": {},
    "nested": {"a": [1, {"b": "c"}]},
}


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pyramid_sessup.stores" and r.levelno >= logging.WARNING]


def test_absent_and_malformed_ids(store: SessionStore) -> None:
    assert store.load(new_sid()) is None
    assert store.update(new_sid(), {"a": 1}, []) is None
    store.touch(new_sid())
    store.delete(new_sid())
    # The layer never passes a malformed ID on; a store still answers "absent".
    for bad in ("", "short", "x" * 44, "../" + "a" * 40, "a" * 42 + "*", "a" * 42 + ":"):
        assert store.load(bad) is None
    assert list(store.ids()) == []


def test_create_load_roundtrip(store: SessionStore) -> None:
    sid = new_sid()
    assert store.create(sid, RECORD) is True
    assert store.load(sid) == RECORD
    assert store.load(sid, touch=False) == RECORD
    assert store.create(sid, {"other": 1}) is False  # the ID is taken
    assert store.load(sid) == RECORD


def test_records_are_json(store: SessionStore) -> None:
    sid = new_sid()
    store.create(sid, {"a": 1})
    store.update(sid, {"b": [2]}, [])
    raw = raw_record(store, sid)
    assert raw is not None and not raw.startswith(b"\x80")  # no pickle protocol header
    assert json.loads(raw) == {"a": 1, "b": [2]}


def test_update_merges_and_removes(store: SessionStore) -> None:
    sid = new_sid()
    store.create(sid, {"keep": 1, "change": 1, "drop": 1})
    merged = store.update(sid, {"change": 2, "new": [1]}, ["drop", "never-there"])
    expected = {"keep": 1, "change": 2, "new": [1]}
    assert merged == expected
    assert store.load(sid) == expected


def test_replace_overwrites_only_a_present_record(store: SessionStore) -> None:
    sid = new_sid()
    assert store.replace(sid, {"a": 1}) is False  # never creates
    assert store.load(sid) is None and store.count() == 0
    store.create(sid, {"a": 1, "b": 2})
    assert store.replace(sid, {"c": 3}) is True
    assert store.load(sid) == {"c": 3}


def test_delete_leaves_a_tombstone_no_write_revives(store: SessionStore) -> None:
    """Logout is for good: after delete, every write to the ID fails and changes nothing."""
    sid, other = new_sid(), new_sid()
    store.create(sid, {"a": 1})
    store.create(other, {"o": 1})
    loaded = dumps(store.load(sid) or {})
    store.delete(sid)
    assert store.load(sid) is None
    assert json.loads(raw_record(store, sid) or b"") is None  # the record became the tombstone
    assert store.update(sid, {"b": 2}, []) is None
    assert store.update(sid, {"b": 2}, [], expected=loaded) is None
    assert store.replace(sid, {"b": 2}) is False
    assert store.create(sid, {"b": 2}) is False
    assert store.move(sid, new_sid(), {"b": 2}) is False
    store.touch(sid)
    assert store.load(sid) is None and store.load(sid, touch=False) is None
    assert list(store.ids()) == [other] and store.count() == 1
    store.delete(sid)  # again: not an error
    assert store.load(sid) is None


def test_delete_of_an_absent_id_kills_it_too(store: SessionStore) -> None:
    sid = new_sid()
    store.delete(sid)
    assert store.create(sid, {"a": 1}) is False
    assert store.load(sid) is None and store.count() == 0


def test_tombstone_lives_the_session_lifetime_then_is_purged(store: SessionStore) -> None:
    dead, live = new_sid(), new_sid()
    store.create(dead, {"a": 1})
    store.create(live, {"a": 1})
    store.delete(dead)
    assert store.purge_expired() == 0  # a fresh tombstone is kept
    assert store.create(dead, {"a": 2}) is False
    expire_now(store, dead)
    assert store.purge_expired() == (0 if store.name == "redis" else 1)  # Redis expires keys itself
    assert raw_record(store, dead) is None
    assert expired_left(store) == 0
    assert list(store.ids()) == [live]


def test_expired_record_is_never_revived(store: SessionStore) -> None:
    sid, new = new_sid(), new_sid()
    store.create(sid, {"a": 1})
    loaded = dumps(store.load(sid) or {})
    expire_now(store, sid)
    assert store.update(sid, {"b": 2}, [], expected=loaded) is None
    assert store.update(sid, {"b": 2}, []) is None
    assert store.replace(sid, {"b": 2}) is False
    assert store.move(sid, new, {"b": 2}) is False
    store.touch(sid)
    assert store.load(sid) is None and store.load(new) is None
    assert store.count() == 0


def test_move_kills_the_old_id_and_stores_the_new(store: SessionStore) -> None:
    old, new, third = new_sid(), new_sid(), new_sid()
    store.create(old, {"a": 1})
    assert store.move(old, new, {"a": 1, "b": 2}) is True
    assert store.load(new) == {"a": 1, "b": 2}
    assert store.load(old) is None
    assert json.loads(raw_record(store, old) or b"") is None
    assert store.update(old, {"c": 3}, []) is None and store.create(old, {"c": 3}) is False
    assert store.move(old, third, {"c": 3}) is False  # a dead ID moves nowhere
    assert store.load(third) is None
    assert list(store.ids()) == [new]


def test_move_changes_nothing_when_it_cannot(store: SessionStore) -> None:
    old, taken, absent = new_sid(), new_sid(), new_sid()
    store.create(old, {"a": 1})
    store.create(taken, {"t": 1})
    assert store.move(old, taken, {"x": 1}) is False  # the new ID is held
    assert store.load(old) == {"a": 1} and store.load(taken) == {"t": 1}
    assert store.move(absent, new_sid(), {"x": 1}) is False
    assert store.load(absent) is None and store.count() == 2
    plant(store, absent, b"[1, 2]")
    assert store.move(absent, new_sid(), {"x": 1}) is False  # a corrupt record is no session
    assert sorted(store.ids()) == sorted([old, taken, absent])


@pytest.mark.parametrize("kill", ["delete", "move"])
def test_writers_racing_a_logout_never_revive_it(store: SessionStore, kill: str) -> None:
    """Four threads keep merging into a session (with and without the loaded record)
    while it is deleted or moved; 20 rounds: afterwards the old ID is always dead."""
    revived = 0
    for _ in range(20):
        sid, new = new_sid(), new_sid()
        store.create(sid, {"n": 0})
        loaded = dumps(store.load(sid) or {})
        started = threading.Barrier(5)
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            try:
                started.wait(30)
                n = 0
                while not stop.is_set() or n < 3:
                    n += 1
                    if i % 2:
                        store.update(sid, {f"k{i}": n}, [], expected=loaded)
                    elif i == 2:
                        store.replace(sid, {f"k{i}": n})
                    else:
                        store.update(sid, {f"k{i}": n}, [])
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        started.wait(30)
        if kill == "delete":
            store.delete(sid)
        else:
            assert store.move(sid, new, {"moved": True}) is True
        stop.set()
        for t in threads:
            t.join(60)
        assert errors == []
        revived += store.load(sid, touch=False) is not None or store.create(sid, {}) is True
    assert revived == 0
    assert store.count() == (0 if kill == "delete" else 20)


@pytest.mark.slow
def test_expiry_slides_on_touch_and_load(store_factory: MakeStore) -> None:
    """Real time: timeout 4 s; records used at 2.5 s outlive 5 s, unused ones do not
    (1.5 s of slack for a busy machine)."""
    store = store_factory(timeout=4)
    touched, loaded, peeked, idle = (new_sid() for _ in range(4))
    for sid in (touched, loaded, peeked, idle):
        store.create(sid, {"sid": sid[:4]})
    time.sleep(2.5)
    store.touch(touched)
    assert store.load(loaded) is not None
    assert store.load(peeked, touch=False) is not None  # a peek does not slide
    time.sleep(2.5)
    assert store.load(touched, touch=False) == {"sid": touched[:4]}
    assert store.load(loaded, touch=False) is not None
    assert store.load(peeked) is None
    assert store.load(idle) is None
    assert sorted(store.ids()) == sorted([touched, loaded])
    store.purge_expired()
    assert expired_left(store) == 0


def test_expired_records_are_invisible_and_purged(store: SessionStore) -> None:
    live = [new_sid() for _ in range(3)]
    dead = [new_sid() for _ in range(2)]
    for sid in live + dead:
        store.create(sid, {"x": 1})
    for sid in dead:
        expire_now(store, sid)
    assert store.load(dead[0]) is None
    assert store.update(dead[1], {"y": 2}, []) is None
    assert sorted(store.ids()) == sorted(live)
    assert store.count() == 3
    # Some stores drop an expired record as soon as they meet it, so purge finds 0 to 2.
    assert 0 <= store.purge_expired() <= 2
    assert expired_left(store) == 0
    assert store.purge_expired() == 0
    assert sorted(store.ids()) == sorted(live)
    # An expired record's ID can be created afresh.
    assert store.create(dead[1], {"fresh": True}) is True
    assert store.load(dead[1]) == {"fresh": True}


def test_purge_counts_every_expired_record(store: SessionStore) -> None:
    dead = [new_sid() for _ in range(4)]
    for sid in dead:
        store.create(sid, {"x": 1})
        expire_now(store, sid)
    keep = new_sid()
    store.create(keep, {"x": 1})
    assert store.purge_expired() == (0 if store.name == "redis" else 4)
    assert expired_left(store) == 0
    assert list(store.ids()) == [keep]


class _Payload:
    """Unpickling this would create a directory: proof of code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("what", ["pickle", "garbage", "json-array", "json-string", "truncated-json"])
def test_corrupt_record_is_absent_and_never_unpickled(
    store: SessionStore, what: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "unpickled"
    raw = {
        "pickle": pickle.dumps(_Payload(marker), protocol=4),
        "garbage": b"\xff\xfe\x00binary",
        "json-array": b"[1, 2]",
        "json-string": b'"text"',
        "truncated-json": b'{"a": 1',
    }[what]
    sid = new_sid()
    plant(store, sid, raw)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyramid_sessup.stores"):
        assert store.load(sid) is None
    assert len(store_warnings(caplog)) == 1
    assert sid[:8] in store_warnings(caplog)[0].getMessage()
    assert not marker.exists()
    assert store.update(sid, {"a": 1}, []) is None
    assert not marker.exists()
    # A full write of a present record overwrites it, corrupt or not.
    assert store.replace(sid, {"ok": True}) is True
    assert store.load(sid) == {"ok": True}


def test_ids_and_count(store: SessionStore) -> None:
    sids = {new_sid() for _ in range(25)}
    for sid in sids:
        store.create(sid, {"n": 1})
    lock = store.acquire_lock(next(iter(sids)), 1)  # a held lock is not a session
    try:
        assert set(store.ids()) == sids
        assert store.count() == 25
    finally:
        store.release_lock(next(iter(sids)), lock)
    for sid in list(sids)[:5]:
        store.delete(sid)
    assert store.count() == 20


def test_lock_excludes_and_times_out(store: SessionStore) -> None:
    sid = new_sid()
    token = store.acquire_lock(sid, 1)
    with pytest.raises(SessionLockTimeout):
        store.acquire_lock(sid, 0.2)
    other_sid = new_sid()
    other = store.acquire_lock(other_sid, 0.2)  # other sessions are not blocked
    store.release_lock(other_sid, other)
    store.release_lock(sid, token)
    again = store.acquire_lock(sid, 1)
    store.release_lock(sid, again)


def test_lock_waiter_gets_the_lock_when_released(store: SessionStore) -> None:
    sid = new_sid()
    token = store.acquire_lock(sid, 1)
    got: list[Any] = []
    waiter = threading.Thread(target=lambda: got.append(store.acquire_lock(sid, 20)))
    waiter.start()
    time.sleep(0.2)
    assert got == []  # still waiting
    store.release_lock(sid, token)
    waiter.join(30)
    assert len(got) == 1
    store.release_lock(sid, got[0])


def test_lock_serializes_read_modify_write(store: SessionStore) -> None:
    """PHP-style: 12 threads increment one counter under the session lock; none is lost."""
    sid = new_sid()
    store.create(sid, {"n": 0})
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            with store.locked(sid, 30):
                data = store.load(sid)
                assert data is not None
                time.sleep(0.001)  # widen the race window
                store.update(sid, {"n": data["n"] + 1}, [])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=increment) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.load(sid) == {"n": 12}


def test_stale_release_keeps_the_new_holder(store: SessionStore) -> None:
    sid = new_sid()
    first = store.acquire_lock(sid, 1)
    store.release_lock(sid, first)
    second = store.acquire_lock(sid, 1)
    store.release_lock(sid, first)  # late, stale release: must not free the new holder
    with pytest.raises(SessionLockTimeout):
        store.acquire_lock(sid, 0.2)
    store.release_lock(sid, second)


def test_concurrent_writers_of_different_keys_all_persist(store: SessionStore) -> None:
    """16 threads, each merging its own key into one session 5 times: nothing lost."""
    sid = new_sid()
    store.create(sid, {"base": True})
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait(30)
            for round_ in range(5):
                assert store.update(sid, {f"k{i}": round_}, []) is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.load(sid) == {"base": True, **{f"k{i}": 4 for i in range(16)}}


def test_two_store_instances_share_the_records(store_factory: MakeStore, kind: str) -> None:
    if kind == "memory":
        pytest.skip("the memory store lives in one process")
    first, second = store_factory(), store_factory()
    sid = new_sid()
    first.create(sid, {"a": 1})
    assert second.update(sid, {"b": 2}, []) == {"a": 1, "b": 2}
    assert first.load(sid) == {"a": 1, "b": 2}
    token = first.acquire_lock(sid, 1)
    with pytest.raises(SessionLockTimeout):
        second.acquire_lock(sid, 0.2)
    first.release_lock(sid, token)
    second.release_lock(sid, second.acquire_lock(sid, 1))
    second.delete(sid)
    assert first.load(sid) is None


def test_update_with_the_loaded_record_merges(store: SessionStore) -> None:
    """``expected`` (the record as loaded) lets a store swap without re-reading;
    whether or not someone wrote meanwhile, the merge is the same."""
    sid = new_sid()
    store.create(sid, {"a": 1, "nested": {"x": [1, 2.5, []]}})
    loaded = store.load(sid)
    assert loaded is not None
    expected = dumps(loaded)
    assert store.update(sid, {"b": 2}, [], expected=expected) == {"a": 1, "b": 2, "nested": {"x": [1, 2.5, []]}}
    # Stale: the record changed since "expected" was loaded; nothing may be lost.
    assert store.update(sid, {"c": 3}, ["a"], expected=expected) == {"b": 2, "c": 3, "nested": {"x": [1, 2.5, []]}}
    assert store.load(sid) == {"b": 2, "c": 3, "nested": {"x": [1, 2.5, []]}}
    store.delete(sid)
    assert store.update(sid, {"d": 4}, [], expected=expected) is None


def test_concurrent_swaps_lose_nothing(store: SessionStore) -> None:
    sid = new_sid()
    store.create(sid, {"base": True})
    expected = dumps(store.load(sid) or {})
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait(30)
        store.update(sid, {f"k{i}": i}, [], expected=expected)  # all start from the same record

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.load(sid) == {"base": True, **{f"k{i}": i for i in range(8)}}
