"""The store side of ID rotation (``SessionStore.rotate``, ``lookup``, the forward
``delete`` reports), run against every store: memory, file, the real Redis and
the real PostgreSQL."""
from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Callable

from pyramid_sessup.stores.base import Forward, SessionStore, dumps

from .backends import expire_now, plant, raw_record

MakeStore = Callable[..., SessionStore]
ROUNDS = 20


def new_sid() -> str:
    return secrets.token_urlsafe(32)


def rotated(store: SessionStore, data: dict[str, Any] | None = None, grace: float = 30) -> tuple[str, str]:
    """A session ``old`` rotated to ``new``; returns (old, new)."""
    old, new = new_sid(), new_sid()
    assert store.create(old, data or {"a": 1})
    assert store.rotate(old, new, {}, [], grace=grace) is not None
    return old, new


def two_processes(store_factory: MakeStore, kind: str) -> list[SessionStore]:
    """Two store objects on one backend, as two app processes have (the memory
    store lives in one process: the same object twice)."""
    first = store_factory()
    return [first, first if kind == "memory" else store_factory()]


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
    assert (raw_record(store, old) or b"").startswith(b"null")


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


def test_only_one_of_racing_rotations_wins(store_factory: MakeStore, kind: str) -> None:
    stores = two_processes(store_factory, kind)
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


def test_writers_racing_a_rotation_lose_nothing(store_factory: MakeStore, kind: str) -> None:
    """Writers of different keys on the old ID, while it rotates: a write that finds
    the old ID dead follows its forward (what the session layer does); every key
    ends up in the one live record."""
    stores = two_processes(store_factory, kind)
    failures = []
    followed = 0
    for _ in range(ROUNDS):
        old, new = new_sid(), new_sid()
        stores[0].create(old, {"a": 1})
        loaded = dumps({"a": 1})

        def work(i: int) -> str:
            store = stores[i % 2]
            if i == 0:
                return "rotated" if store.rotate(old, new, {}, [], grace=30) is not None else "lost"
            sid, expected = old, loaded
            for _ in range(3):
                if store.update(sid, {f"k{i}": i}, [], expected=expected) is not None:
                    return "written" if sid == old else "followed"
                found = store.lookup(sid, touch=False)
                if not isinstance(found, Forward):
                    return "dead"
                sid, expected = found.target, None
            return "too many forwards"

        outcome = together(9, work)
        followed += outcome.count("followed")
        record = stores[1].load(new)
        if outcome[0] != "rotated" or not set(outcome[1:]) <= {"written", "followed"}:
            failures.append(f"outcomes {outcome}")
        elif record is None or any(record.get(f"k{i}") != i for i in range(1, 9)):
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


def test_rotation_and_delete_racing_never_leave_a_live_session(store_factory: MakeStore, kind: str) -> None:
    """A logout by the old ID racing its rotation (delete, then kill what it led
    to): whichever comes first, no live record is left."""
    stores = two_processes(store_factory, kind)
    failures = []
    for _ in range(ROUNDS):
        old, new = new_sid(), new_sid()
        stores[0].create(old, {"a": 1})
        together(2, lambda i: stores[0].rotate(old, new, {}, [], grace=30) if i == 0 else stores[1].kill(old))
        if stores[0].load(new) is not None or stores[1].load(old) is not None:
            failures.append("a live record survived the logout")
    assert failures == [], f"{len(failures)} failures in {ROUNDS} rounds"
