"""Reach under a store to age, plant or count raw records, the way an outside
writer (or the passing of time) would; used by the contract tests."""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

from pyramid_sessup.stores.base import SessionStore

from ..support import POSTGRES_URL


def _pg(store: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(query.replace("{t}", store.table_name), params)
        return cur.fetchall() if cur.description else cur.rowcount


def expire_now(store: SessionStore, sid: str) -> None:
    """Make the record of ``sid`` expired, as if its timeout had passed."""
    if store.name == "memory":
        raw, _ = store._records[sid]  # type: ignore[attr-defined]
        store._records[sid] = (raw, time.time() - 1)  # type: ignore[attr-defined]
    elif store.name == "file":
        old = time.time() - store.timeout - 10
        os.utime(store._record_path(sid), (old, old))  # type: ignore[attr-defined]
    elif store.name == "redis":
        store.client.pexpire(store._key(sid), 1)  # type: ignore[attr-defined]
        time.sleep(0.01)
    else:
        _pg(store, "UPDATE {t} SET expires_at = now() - interval '1 second' WHERE id = %s", (sid,))


def plant(store: SessionStore, sid: str, raw: bytes) -> None:
    """Write ``raw`` as the stored record of ``sid``, bypassing the store's encoder."""
    if store.name == "memory":
        store._records[sid] = (raw.decode("latin-1"), time.time() + 60)  # type: ignore[attr-defined]
    elif store.name == "file":
        path = store._record_path(sid)  # type: ignore[attr-defined]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(raw)
    elif store.name == "redis":
        store.client.set(store._key(sid), raw, ex=60)  # type: ignore[attr-defined]
    else:
        # jsonb holds only JSON: what an attacker can plant is a non-object value.
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.decode("latin-1").replace("\x00", "")  # jsonb text cannot hold NUL
        store.ping()  # type: ignore[attr-defined]  # creates the table
        _pg(store, "INSERT INTO {t} (id, data, version, expires_at) VALUES (%s, %s::jsonb, 1, now() + interval '1 minute')"
            " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data",
            (sid, json.dumps(value)))


def expired_left(store: SessionStore) -> int:
    """Records physically present that are expired (or would never expire)."""
    now = time.time()
    if store.name == "memory":
        return sum(1 for _, exp in store._records.values() if exp <= now)  # type: ignore[attr-defined]
    if store.name == "file":
        left = 0
        for root, _, files in os.walk(store.path):  # type: ignore[attr-defined]
            for name in files:
                if name.endswith(".json") and now - os.stat(os.path.join(root, name)).st_mtime > store.timeout:
                    left += 1
        return left
    if store.name == "redis":
        client = store.client  # type: ignore[attr-defined]
        prefix = store.key_prefix  # type: ignore[attr-defined]
        escaped = "".join("\\" + c if c in "*?[]\\^" else c for c in prefix)
        # Expired keys are gone; a key without a TTL would never expire.
        return sum(1 for key in client.scan_iter(match=escaped + "*") if client.ttl(key) == -1)
    return _pg(store, "SELECT count(*) FROM {t} WHERE expires_at <= now()")[0][0]


def raw_record(store: SessionStore, sid: str) -> bytes | None:
    """The stored bytes of a record, as the backend holds them."""
    if store.name == "memory":
        entry = store._records.get(sid)  # type: ignore[attr-defined]
        if entry is None:
            return None
        return b"null" if entry[0] is None else entry[0].encode()  # None: its tombstone
    if store.name == "file":
        try:
            with open(store._record_path(sid), "rb") as f:  # type: ignore[attr-defined]
                return f.read()
        except FileNotFoundError:
            return None
    if store.name == "redis":
        return store.client.get(store._key(sid))  # type: ignore[attr-defined]
    rows = _pg(store, "SELECT data::text FROM {t} WHERE id = %s", (sid,))
    return rows[0][0].encode() if rows else None


def in_thread(fn: Callable[[], Any], limit: float = 60) -> Any:
    """Run ``fn`` in a thread; a call still running after ``limit`` seconds is a hang."""
    result: list[Any] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "the store hung instead of raising StoreUnavailable"
    if error:
        raise error[0]
    return result[0]


def raw_count(store: SessionStore) -> int:
    """Everything the store physically holds (records, lock keys or files, anything),
    counted under the store rather than through it."""
    if store.name == "memory":
        return len(store._records)  # type: ignore[attr-defined]
    if store.name == "file":
        return sum(len(files) for _, _, files in os.walk(store.path))  # type: ignore[attr-defined]
    if store.name == "redis":
        prefix = store.key_prefix  # type: ignore[attr-defined]
        escaped = "".join("\\" + c if c in "*?[]\\^" else c for c in prefix)
        return sum(1 for _ in store.client.scan_iter(match=escaped + "*"))  # type: ignore[attr-defined]
    store.ping()  # type: ignore[attr-defined]  # creates the table
    return _pg(store, "SELECT count(*) FROM {t}")[0][0]
