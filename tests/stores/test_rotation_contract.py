"""The store side of ID rotation (``SessionStore.rotate``, ``lookup``, the forward
``delete`` reports), run against every store: memory, file, the real Redis and
the real PostgreSQL, each also through encryption at rest (whose ``rotate``
rewrites the record for the new ID instead of moving it)."""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Callable

import pytest

from pyramid_sessup.stores.base import Forward, SessionStore, dumps
from pyramid_sessup.stores.encrypted import EncryptedStore

from .backends import expire_now, plant

MakeStore = Callable[..., SessionStore]
ROUNDS = 20
WRITES = 4  # writes of each writer in the rotation race
#: Two secrets: the encrypted stores also carry removal markers and re-encrypt.
SECRETS = ["rotation-contract-secret-new-0123456789abcdef", "rotation-contract-secret-old-0123456789abcdef"]
PLAIN_OR_ENCRYPTED = pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])


def new_sid() -> str:
    return secrets.token_urlsafe(32)


def rotated(store: SessionStore, data: dict[str, Any] | None = None, grace: float = 30) -> tuple[str, str]:
    """A session ``old`` rotated to ``new``; returns (old, new)."""
    old, new = new_sid(), new_sid()
    assert store.create(old, data or {"a": 1})
    assert store.rotate(old, new, {}, [], grace=grace) is not None
    return old, new


def two_processes(store_factory: MakeStore, kind: str, encrypted: bool = False) -> list[SessionStore]:
    """Two store objects on one backend, as two app processes have (the memory
    store lives in one process: the same object twice)."""
    first = store_factory()
    stores = [first, first if kind == "memory" else store_factory()]
    return [EncryptedStore(store, SECRETS) for store in stores] if encrypted else stores


def together(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(0..n-1)`` in ``n`` threads released at once; their results."""
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
        t.join(60)
    assert errors == []
    return results


def test_rotate_moves_the_record_and_forwards_the_old_id(store: SessionStore) -> None:
    old, new = new_sid(), new_sid()
    store.create(old, {"keep": 1, "change": 1, "drop": 1})
    record = store.rotate(old, new, {"change": 2, "_issued": 5.0}, ["drop"], grace=30)
    assert record == {"keep": 1, "change": 2, "_issued": 5.0}
    assert store.load(new) == record and store.lookup(new) == record
    assert store.load(old) is None  # dead for everything but lookup
    assert store.lookup(old) == Forward(new) and store.lookup(old, touch=False) == Forward(new)
    assert list(store.ids()) == [new] and store.count() == 1  # never two live records
    assert store.create(old, {"revived": True}) is False  # a tombstone, forward or not


def test_writes_to_a_rotated_id_change_nothing(store: SessionStore) -> None:
    old, new = rotated(store)
    other = new_sid()
    assert store.update(old, {"b": 2}, []) is None
    assert store.update(old, {"b": 2}, [], expected=dumps({"a": 1})) is None
    assert store.replace(old, {"b": 2}) is False
    assert store.move(old, other, {"b": 2}) is False
    assert store.rotate(old, other, {"b": 2}, [], grace=30) is None
    store.touch(old)
    assert store.load(other) is None and store.lookup(other) is None
    assert store.load(new) == {"a": 1}
    assert store.lookup(old) == Forward(new)


def test_forward_dies_after_the_grace_and_the_old_id_stays_dead(store: SessionStore) -> None:
    old, new = rotated(store, grace=1)
    assert store.lookup(old) == Forward(new)
    time.sleep(1.3)
    assert store.lookup(old) is None and store.lookup(old, touch=False) is None
    assert store.create(old, {"revived": True}) is False  # still a tombstone
    assert store.update(old, {"b": 2}, []) is None and store.replace(old, {"b": 2}) is False
    assert store.delete(old) is None  # no forward left to report
    assert store.load(new) == {"a": 1}  # the session itself lives on


def test_rotate_refuses_what_is_not_a_live_record(store: SessionStore) -> None:
    absent, dead, expired, corrupt, taken, free = (new_sid() for _ in range(6))
    store.delete(dead)
    store.create(expired, {"a": 1})
    expire_now(store, expired)
    plant(store, corrupt, b'"not an object"')
    store.create(taken, {"mine": True})
    for old in (absent, dead, expired, corrupt):
        assert store.rotate(old, free, {"b": 2}, [], grace=30) is None
        assert store.lookup(old) is None
    assert store.load(free) is None and store.create(free, {}) is True  # nothing was written there
    live = new_sid()
    store.create(live, {"a": 1})
    assert store.rotate(live, taken, {"b": 2}, [], grace=30) is None  # the new ID is taken
    assert store.load(live) == {"a": 1} and store.load(taken) == {"mine": True}
    assert store.rotate(live, live, {}, [], grace=30) is None
    assert store.load(live) == {"a": 1}


def test_rotate_moves_the_record_as_stored_not_the_callers_copy(store: SessionStore) -> None:
    """A request that loaded the record, then another request wrote: the rotation
    carries the other request's write too (compare-and-set stores retry on the
    stored record)."""
    old, new = new_sid(), new_sid()
    store.create(old, {"a": 1})
    loaded = dumps({"a": 1})
    store.update(old, {"b": 2}, [])  # someone else's write, after our load
    record = store.rotate(old, new, {"c": 3}, [], grace=30, expected=loaded)
    assert record == {"a": 1, "b": 2, "c": 3} == store.load(new)


def test_rotate_if_record_rotates_only_that_record(store: SessionStore) -> None:
    old, new = new_sid(), new_sid()
    store.create(old, {"a": 1})
    read = dumps({"a": 1})
    store.update(old, {"b": 2}, [])  # written after the read
    assert store.rotate(old, new, {"c": 3}, [], grace=30, if_record=read) is None
    assert store.load(old) == {"a": 1, "b": 2} and store.lookup(new) is None  # nothing changed
    assert store.rotate(old, new, {"c": 3}, ["a"], grace=30, if_record=dumps({"a": 1, "b": 2})) == {"b": 2, "c": 3}
    assert store.lookup(old) == Forward(new)


@PLAIN_OR_ENCRYPTED
def test_only_one_of_racing_rotations_wins(store_factory: MakeStore, kind: str, encrypted: bool) -> None:
    stores = two_processes(store_factory, kind, encrypted)
    failures = []
    for _ in range(ROUNDS):
        old = new_sid()
        stores[0].create(old, {"a": 1})
        news = [new_sid() for _ in range(8)]
        results = together(8, lambda i: stores[i % 2].rotate(old, news[i], {f"k{i}": i}, [], grace=30))
        winners = [news[i] for i, r in enumerate(results) if r is not None]
        if len(winners) != 1:
            failures.append(f"{len(winners)} rotations won")
            continue
        if stores[1].lookup(old) != Forward(winners[0]):
            failures.append("the old ID does not forward to the winner")
        live = [sid for sid in news if stores[0].load(sid) is not None]
        if live != winners:
            failures.append(f"{len(live)} live records")
    assert failures == [], f"{len(failures)} failures in {ROUNDS} rounds: {failures[:5]}"


@PLAIN_OR_ENCRYPTED
def test_writers_racing_a_rotation_lose_nothing(store_factory: MakeStore, kind: str, encrypted: bool) -> None:
    """Writers of different keys on the old ID, while it rotates: a write that finds
    the old ID dead follows its forward (what the session layer does); every key
    ends up in the one live record.  (An encrypted rotation starts again when a
    write lands first: it then succeeds between two writes.)"""
    stores = two_processes(store_factory, kind, encrypted)
    failures = []
    followed = 0
    for _ in range(ROUNDS):
        old, new = new_sid(), new_sid()
        stores[0].create(old, {"a": 1})
        loaded = dumps({"a": 1})

        def write(store: SessionStore, sid: str, expected: str | None, key: str, value: int) -> tuple[str, str]:
            """One write; if the ID was rotated, on the ID its forward names. (outcome, ID written)"""
            for _ in range(3):
                if store.update(sid, {key: value}, [], expected=expected) is not None:
                    return ("written" if sid == old else "followed"), sid
                found = store.lookup(sid, touch=False)
                if not isinstance(found, Forward):
                    return "dead", sid
                sid, expected = found.target, None
            return "too many forwards", sid

        def work(i: int) -> list[str]:
            store = stores[i % 2]
            if i == 0:
                return ["rotated" if store.rotate(old, new, {}, [], grace=30) is not None else "lost"]
            outcomes, sid, expected = [], old, loaded
            for j in range(WRITES):  # one request's writes, one after the other
                time.sleep(0.002 * j)  # a request between two writes: room for the rotation
                outcome, written = write(store, sid, expected, f"k{i}-{j}", i)
                outcomes.append(outcome)
                if written != sid:
                    sid, expected = written, None
            return outcomes

        outcome = together(9, work)
        writes = [o for outcomes in outcome[1:] for o in outcomes]
        followed += writes.count("followed")
        record = stores[1].load(new)
        if outcome[0] != ["rotated"] or not set(writes) <= {"written", "followed"}:
            failures.append(f"outcomes {outcome}")
        elif record is None or any(record.get(f"k{i}-{j}") != i for i in range(1, 9) for j in range(WRITES)):
            failures.append(f"lost writes: {record}")
        elif list(stores[0].ids()).count(new) != 1 or stores[0].load(old) is not None:
            failures.append("two live records")
    assert failures == [], f"{len(failures)} failures in {ROUNDS} rounds: {failures[:5]}"
    # Writes landed on both sides of the rotation: the test met the race it guards.
    assert followed > 0, "no write found the old ID rotated: the race was never met"


def test_deleting_a_rotated_id_reports_where_it_led(store: SessionStore) -> None:
    old, new = rotated(store)
    assert store.delete(new) is None  # the new ID forwards nowhere
    assert store.delete(old) == new
    assert store.lookup(old) is None  # the forward went with it
    assert store.delete(old) is None


def test_kill_ends_the_session_under_both_ids(store: SessionStore) -> None:
    old, middle = rotated(store)
    newest = new_sid()
    store.rotate(middle, newest, {}, [], grace=30)  # rotated twice within the grace
    store.kill(old)
    for sid in (old, middle, newest):
        assert store.lookup(sid) is None and store.load(sid) is None
    assert list(store.ids()) == []


def test_a_forward_never_leads_past_a_dead_record(store: SessionStore) -> None:
    """Logged out under the new ID during the grace: the old ID's forward may still
    be there, but it leads to a tombstone."""
    old, new = rotated(store)
    store.delete(new)
    found = store.lookup(old)
    assert found is None or (found == Forward(new) and store.lookup(new) is None)
    assert store.update(new, {"b": 2}, []) is None and store.load(new) is None


@PLAIN_OR_ENCRYPTED
def test_rotation_and_delete_racing_never_leave_a_live_session(store_factory: MakeStore, kind: str, encrypted: bool) -> None:
    """A logout by the old ID racing its rotation (delete, then kill what it led
    to): whichever comes first, no live record is left."""
    stores = two_processes(store_factory, kind, encrypted)
    failures = []
    for _ in range(ROUNDS):
        old, new = new_sid(), new_sid()
        stores[0].create(old, {"a": 1})
        together(2, lambda i: stores[0].rotate(old, new, {}, [], grace=30) if i == 0 else stores[1].kill(old))
        if stores[0].load(new) is not None or stores[1].load(old) is not None:
            failures.append("a live record survived the logout")
    assert failures == [], f"{len(failures)} failures in {ROUNDS} rounds"


# -- through encryption at rest ------------------------------------------------------------------

THROUGH_ENCRYPTION = [
    test_rotate_moves_the_record_and_forwards_the_old_id,
    test_writes_to_a_rotated_id_change_nothing,
    test_forward_dies_after_the_grace_and_the_old_id_stays_dead,
    test_rotate_moves_the_record_as_stored_not_the_callers_copy,
    test_deleting_a_rotated_id_reports_where_it_led,
    test_kill_ends_the_session_under_both_ids,
    test_a_forward_never_leads_past_a_dead_record,
]


@pytest.mark.parametrize("check", THROUGH_ENCRYPTION, ids=lambda check: check.__name__.removeprefix("test_"))
def test_rotation_contract_holds_through_encryption(store: SessionStore, check: Callable[[SessionStore], None]) -> None:
    check(EncryptedStore(store, SECRETS))


def test_encrypted_rotation_binds_every_value_to_the_new_id(store: SessionStore,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """The values under the new ID are encrypted for it (each is bound to its session):
    none is left bound to the old ID, and none is dropped on reading."""
    old_only = EncryptedStore(store, SECRETS[1:])  # a record written before the first secret came
    old, new = new_sid(), new_sid()
    old_only.create(old, {"a": 1, "b": [2]})
    encrypted = EncryptedStore(store, SECRETS)
    with caplog.at_level(logging.WARNING):
        assert encrypted.rotate(old, new, {"c": 3}, ["b"], grace=30) == {"a": 1, "c": 3}
        assert encrypted.load(new) == {"a": 1, "c": 3}
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    inner = store.load(new)
    assert inner is not None and len(inner) == 2  # one entry per key: nothing of the old ID's left
    assert {token.partition(".")[0] for token in inner.values()} == {encrypted.key_id}  # the first secret's
    # Those entries are bound to the new ID: copied back under the old one, they do not decrypt.
    other = new_sid()
    store.create(other, inner)
    assert encrypted.load(other) == {}
