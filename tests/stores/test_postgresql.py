"""PostgreSQL store specifics: schema on first use, expires_at, purge, connection handling, outages."""
from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Callable, Iterator

import psycopg
import pytest
from pyramid.exceptions import ConfigurationError

from pyramid_sessup.exceptions import SessionLockTimeout, SessionValueError, StoreUnavailable
from pyramid_sessup.settings import parse_settings
from pyramid_sessup.stores import make_store
from pyramid_sessup.stores.postgresql import PostgresStore, parse_table_name

from ..support import POSTGRES_URL, free_port
from .backends import in_thread
from .conftest import random_table

pytestmark = pytest.mark.postgres


def new_sid() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def make(postgres_table: str) -> Iterator[Callable[..., PostgresStore]]:
    made: list[PostgresStore] = []

    def factory(**kw: Any) -> PostgresStore:
        kw.setdefault("timeout", 100)
        kw.setdefault("table", postgres_table)
        store = PostgresStore(kw.pop("url", POSTGRES_URL), **kw)
        made.append(store)
        return store

    yield factory
    for store in made:
        store.close()


@pytest.fixture
def db() -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        yield conn


def test_table_created_on_first_use(make: Callable[..., PostgresStore], db: psycopg.Connection[Any],
                                    postgres_table: str) -> None:
    store = make()
    exists = "SELECT to_regclass(%s) IS NOT NULL"
    assert db.execute(exists, [postgres_table]).fetchone() == (False,)  # building the store does not connect
    assert store.load(new_sid()) is None
    assert db.execute(exists, [postgres_table]).fetchone() == (True,)
    columns = dict(db.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
        [postgres_table]).fetchall())
    assert columns == {"id": "text", "data": "jsonb", "version": "bigint",
                       "expires_at": "timestamp with time zone"}
    indexes = [r[0] for r in db.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s",
                                        [postgres_table]).fetchall()]
    assert any("(expires_at)" in d for d in indexes)
    # One table is all: locks are rows of it.
    assert db.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE %s",
                      [postgres_table + "%"]).fetchone() == (1,)


def test_concurrent_first_use_from_many_stores(make: Callable[..., PostgresStore]) -> None:
    """Several processes starting at once all create-if-missing the same table without error."""
    stores = [make() for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def first_use(store: PostgresStore) -> None:
        try:
            barrier.wait(30)
            store.create(new_sid(), {"a": 1})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert stores[0].count() == 6


def test_expires_at_slides_and_version_counts(make: Callable[..., PostgresStore], db: psycopg.Connection[Any],
                                              postgres_table: str) -> None:
    store = make()
    sid = new_sid()
    store.create(sid, {"a": 1})
    row = f"SELECT version, expires_at - now() FROM {postgres_table} WHERE id = %s"
    version, left = db.execute(row, [sid]).fetchone()
    assert version == 1 and 95 <= left.total_seconds() <= 100
    store.update(sid, {"b": 2}, [])
    store.update(sid, {}, ["a"])
    assert db.execute(row, [sid]).fetchone()[0] == 3
    for action in (lambda: store.touch(sid), lambda: store.load(sid)):
        db.execute(f"UPDATE {postgres_table} SET expires_at = now() + interval '5 seconds' WHERE id = %s", [sid])
        action()
        assert db.execute(row, [sid]).fetchone()[1].total_seconds() >= 95
    db.execute(f"UPDATE {postgres_table} SET expires_at = now() + interval '5 seconds' WHERE id = %s", [sid])
    assert store.load(sid, touch=False) == {"b": 2}
    assert db.execute(row, [sid]).fetchone()[1].total_seconds() <= 5


def test_purge_deletes_expired_rows_and_stale_locks(make: Callable[..., PostgresStore],
                                                    db: psycopg.Connection[Any], postgres_table: str) -> None:
    store = make(lock_ttl=60)
    live, dead = [new_sid() for _ in range(3)], [new_sid() for _ in range(5)]
    for sid in live + dead:
        store.create(sid, {"a": 1})
    db.execute(f"UPDATE {postgres_table} SET expires_at = now() - interval '1 second' WHERE id = ANY(%s)", [dead])
    store.acquire_lock(live[0], 1)
    db.execute(f"UPDATE {postgres_table} SET expires_at = now() - interval '1 second' WHERE id LIKE 'lock:%%'")
    assert store.count() == 3
    assert store.purge_expired() == 5
    assert db.execute(f"SELECT count(*) FROM {postgres_table} WHERE expires_at <= now()").fetchone() == (0,)
    assert db.execute(f"SELECT count(*) FROM {postgres_table}").fetchone() == (3,)
    assert store.purge_expired() == 0


def test_lock_is_bounded_in_time(make: Callable[..., PostgresStore], db: psycopg.Connection[Any],
                                 postgres_table: str) -> None:
    """A holder that never releases (crashed process) blocks others for lock_ttl, and no longer."""
    store = make(lock_ttl=0.5)
    sid = new_sid()
    taken = time.monotonic()
    store.acquire_lock(sid, 1)  # never released: a crashed holder
    [(left,)] = db.execute(f"SELECT expires_at - now() FROM {postgres_table} WHERE id = %s", ["lock:" + sid]).fetchall()
    assert 0 < left.total_seconds() <= 0.5  # by the database clock
    with pytest.raises(SessionLockTimeout):
        store.acquire_lock(sid, 0.05)  # held while its TTL runs
    # The bound: the next holder gets it once the TTL is over (1.5 s spare for a busy machine).
    token = store.acquire_lock(sid, 0.5 + 1.5)
    assert time.monotonic() - taken >= 0.45  # and not before
    store.release_lock(sid, token)
    assert db.execute(f"SELECT count(*) FROM {postgres_table} WHERE id = %s", ["lock:" + sid]).fetchone() == (0,)


def test_nul_character_is_a_session_value_error(make: Callable[..., PostgresStore]) -> None:
    """jsonb cannot hold U+0000; the caller gets a clear error, and the record is unchanged."""
    store = make()
    sid = new_sid()
    store.create(sid, {"a": 1})
    with pytest.raises(SessionValueError):
        store.update(sid, {"bad": "nul\x00here"}, [])
    assert store.load(sid) == {"a": 1}


@pytest.mark.parametrize("name", ["sessions; DROP TABLE x", "1abc", "a-b", "a" * 51, "a.b.c", "", '"quoted"',
                                  "tab le", "schema."])
def test_invalid_table_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="sessup.session.table"):
        PostgresStore(POSTGRES_URL, timeout=10, table=name)


def test_schema_qualified_table(db: psycopg.Connection[Any]) -> None:
    schema = "sessup_test_schema_" + secrets.token_hex(4)
    db.execute(f"CREATE SCHEMA {schema}")
    store = PostgresStore(POSTGRES_URL, timeout=10, table=f"{schema}.sessions")
    try:
        assert parse_table_name(f"{schema}.sessions") == (schema, "sessions")
        sid = new_sid()
        store.create(sid, {"a": 1})
        assert db.execute(f"SELECT count(*) FROM {schema}.sessions").fetchone() == (1,)
        assert list(store.ids()) == [sid]
    finally:
        store.close()
        db.execute(f"DROP SCHEMA {schema} CASCADE")


def test_settings_reach_the_connection(postgres_table: str, db: psycopg.Connection[Any]) -> None:
    values = parse_settings({
        "sessup.session.secret": "x" * 40, "sessup.session.store": "postgresql",
        "sessup.session.url": POSTGRES_URL, "sessup.session.table": postgres_table,
        "sessup.session.pool_size": "3", "sessup.session.connect_timeout": "0.5",
        "sessup.session.socket_timeout": "1.5", "sessup.session.lock_timeout": "40",
        "sessup.session.timeout": "42",
    })
    store = make_store(values)
    try:
        assert isinstance(store, PostgresStore)
        assert store.lock_ttl == 120
        assert store._pool.max_size == 3
        store.ping()
        settings = store._run(lambda conn: conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
            " current_setting('application_name')").fetchone())
        assert settings == ("1500ms", "1500ms", "pyramid_sessup")
        sid = new_sid()
        store.create(sid, {"a": 1})
        left = db.execute(f"SELECT expires_at - now() FROM {postgres_table}").fetchone()[0]
        assert 37 <= left.total_seconds() <= 42
        # A read commits without waiting for the WAL flush, for its own transaction only.
        assert store.load(sid) == {"a": 1}
        assert store._run(lambda conn: conn.execute("SHOW synchronous_commit").fetchone()) == ("on",)
    finally:
        store.close()


def test_a_connection_killed_by_the_server_is_replaced(make: Callable[..., PostgresStore],
                                                       db: psycopg.Connection[Any]) -> None:
    """After a PostgreSQL restart or an idle kill, the next call reconnects instead of failing."""
    store = make(pool_size=1)
    sid = new_sid()
    store.create(sid, {"a": 1})
    pid = store._run(lambda conn: conn.info.backend_pid)
    assert db.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,)
    assert store.load(sid) == {"a": 1}
    assert store._run(lambda conn: conn.info.backend_pid) != pid


def _call_all(store: PostgresStore) -> list[str]:
    sid = new_sid()
    calls = {
        "load": lambda: store.load(sid),
        "create": lambda: store.create(sid, {"a": 1}),
        "update": lambda: store.update(sid, {"a": 1}, []),
        "replace": lambda: store.replace(sid, {"a": 1}),
        "touch": lambda: store.touch(sid),
        "delete": lambda: store.delete(sid),
        "lock": lambda: store.acquire_lock(sid, 0.5),
        "unlock": lambda: store.release_lock(sid, "token"),
        "ids": lambda: list(store.ids()),
        "count": lambda: store.count(),
        "purge": lambda: store.purge_expired(),
    }
    survived = []
    for name, call in calls.items():
        try:
            call()
            survived.append(name)
        except StoreUnavailable:
            pass
    return survived


def test_refused_connection_raises_store_unavailable() -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{free_port()}/test", timeout=10,
                          table=random_table(), connect_timeout=0.2, socket_timeout=0.2)
    try:
        assert in_thread(lambda: _call_all(store), limit=120) == []
    finally:
        store.close()


def test_server_that_never_answers_raises_store_unavailable(silent_server: int) -> None:
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{silent_server}/test", timeout=10,
                          table=random_table(), connect_timeout=0.2, socket_timeout=0.2)
    try:
        assert in_thread(lambda: _call_all(store), limit=120) == []
    finally:
        store.close()


def test_a_statement_stuck_behind_a_lock_times_out(make: Callable[..., PostgresStore],
                                                   postgres_table: str) -> None:
    """statement/lock timeouts from socket_timeout: a row locked elsewhere cannot hang a request."""
    store = make(socket_timeout=0.3)
    sid = new_sid()
    store.create(sid, {"a": 1})
    with psycopg.connect(POSTGRES_URL, connect_timeout=5) as other:
        other.execute(f"SELECT * FROM {postgres_table} WHERE id = %s FOR UPDATE", [sid])
        with pytest.raises(StoreUnavailable):
            in_thread(lambda: store.update(sid, {"b": 2}, []))
        other.rollback()
    assert store.update(sid, {"b": 2}, []) == {"a": 1, "b": 2}


@pytest.fixture
def restricted_role(db: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role without CREATE on any schema, as a least-privileged app user."""
    role = "sessup_test_role_" + secrets.token_hex(4)
    db.execute(f"CREATE ROLE {role} LOGIN")
    db.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}")
    yield role
    db.execute(f"DROP OWNED BY {role}")
    db.execute(f"DROP ROLE {role}")


def _role_url(role: str) -> str:
    return POSTGRES_URL.replace("postgres@", f"{role}@", 1)


def test_least_privileged_user_works_with_existing_tables(make: Callable[..., PostgresStore], restricted_role: str,
                                                          db: psycopg.Connection[Any], postgres_table: str) -> None:
    can_create = db.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", [restricted_role]).fetchone()
    if can_create == (True,):
        pytest.skip("this server lets every role create in schema public")
    app_store = make(url=_role_url(restricted_role))
    with pytest.raises(ConfigurationError, match="may not create it"):
        app_store.load(new_sid())
    make().ping()  # a privileged user creates the tables once
    db.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {postgres_table} TO {restricted_role}")
    sid = new_sid()
    assert app_store.create(sid, {"a": 1}) is True
    assert app_store.update(sid, {"b": 2}, []) == {"a": 1, "b": 2}
    app_store.release_lock(sid, app_store.acquire_lock(sid, 1))
    assert app_store.purge_expired() == 0


@pytest.mark.parametrize("url", ["postgresql://[broken", "postgresql://postgres@127.0.0.1/test?bogus=1"])
def test_invalid_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="sessup.session.url"):
        PostgresStore(url, timeout=10)
