"""PostgreSQL session store: one row per session, expiry in an ``expires_at`` column.

Schema: one table (created on first use, idempotently, by any number of
processes; or beforehand by a DBA, for an app user with only
SELECT/INSERT/UPDATE/DELETE on it)::

    CREATE TABLE <table> (id text PRIMARY KEY, data jsonb NOT NULL,
                          version bigint NOT NULL DEFAULT 1, expires_at timestamptz NOT NULL);
    CREATE INDEX <table>_expires_at ON <table> (expires_at);

A dead ID (``delete``, ``move``) is a row whose ``data`` is the JSON ``null``,
expiring like a session: the one statement that deletes the record writes it.
Every read and write skips such a row; ``create`` cannot take it over until it
has expired.

Session locks (``sessup.session.lock``) are rows of the same table with the ID
``lock:<session id>`` (never a valid session ID) and their own expiry, and so
are counters (upload quotas, ``quota:<key>``), the forwards of rotated IDs
(``fwd:<old id>``: the new ID as a JSON string, expiring after the grace, by
the database clock) and the user index (``user:<user key>``: one row per user,
found by the primary key, whose ``data`` maps each session ID to the time it
was linked), so one table is all there is to create, grant, back up or drop.
Session IDs never hold ``:``, which is how every session query tells the other
rows apart.  A user's index row expires two session lifetimes after its last
link (a session is re-linked whenever its "last seen" is written); linking,
and :meth:`PostgresStore.purge_expired`, drop its entries of dead sessions
linked over a timeout ago, and purge deletes the rows left empty or expired.

Every per-request operation is one statement, so one round trip: ``load`` with
touch is ``UPDATE … RETURNING data`` (committed without waiting for the WAL
flush: it only slides the expiry); ``update`` merges in the database
(``data || changed - removed``), which is atomic under the row lock the UPDATE
takes, so concurrent writers of different keys both persist without any
client-side lock.  Times come from the database clock (``now()``), so app
servers with drifting clocks agree on expiry.  Expired rows are invisible to
every read and are deleted by :meth:`PostgresStore.purge_expired`
(``sessup-sessions INI purge-expired``).

``rotate`` is one statement too: it locks the old row (``FOR UPDATE``, so it
copies the record as the last concurrent writer left it), turns it into a
tombstone, inserts the merged record under the new ID and the forward; a
concurrent ``update`` of the old ID then finds a tombstone.  ``lookup`` reads
the forward only when the ID holds a tombstone (a second statement); ``delete``
tombstones the row first (waiting for a rotation under way) and then takes the
forward away, so it never misses one.

Never a hang: connects are bounded by ``connect_timeout``; statements by a
server-side ``statement_timeout``/``lock_timeout`` and the kernel's
``tcp_user_timeout`` (both ``socket_timeout``); waiting for a pooled
connection by ``connect_timeout + socket_timeout``.
"""
from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from pyramid.exceptions import ConfigurationError

from ..exceptions import SessionLockTimeout, SessionValueError, StoreUnavailable
from ..settings import SessupSettings
from .base import (
    TOMBSTONE,
    CounterFn,
    Forward,
    SessionStore,
    dumps,
    loads,
    required,
    valid_counter_key,
    valid_session_id,
    valid_user_key,
)

log = logging.getLogger("pyramid_sessup.stores.postgresql")

T = TypeVar("T")

#: One plain SQL identifier, optionally schema-qualified; short enough that the
#: derived index name stays within PostgreSQL's 63 bytes.
_TABLE_RE = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_]{0,62})\.)?([A-Za-z_][A-Za-z0-9_]{0,49})\Z")

#: Errors meaning "the database is unreachable or did not answer in time":
#: refused/broken connections, pool wait timeouts, statement_timeout and
#: lock_timeout cancellations (all OperationalError subclasses), and use of a
#: connection that was closed under us.
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError)

#: Lock and counter rows share the table; their IDs start with these (":" never
#: occurs in a session ID).
_LOCK_PREFIX = "lock:"
_COUNTER_PREFIX = "quota:"
_USER_PREFIX = "user:"
_FORWARD_PREFIX = "fwd:"
_SESSION_ROW = "strpos(id, ':') = 0"

#: A row that is not a tombstone.
_ALIVE = f"data <> '{TOMBSTONE}'::jsonb"

#: Whether the user index entry ``e`` (a row of jsonb_each) stays: linked less than
#: a timeout ago (its record may be about to be written), or its session is alive.
_KEEP_ENTRY = (
    "(CASE WHEN jsonb_typeof(e.value) = 'number' THEN e.value::text::float8 ELSE 0 END"
    " > extract(epoch FROM now()) - %(timeout)s"
    " OR EXISTS (SELECT 1 FROM {t} x WHERE x.id = e.key AND x.expires_at > now()"
    " AND jsonb_typeof(x.data) = 'object'))"
)


def parse_table_name(name: str) -> tuple[str, ...]:
    """``"sessions"`` or ``"schema.sessions"`` -> identifier parts; ConfigurationError otherwise."""
    match = _TABLE_RE.match(name or "")
    if not match:
        raise ConfigurationError(
            f"sessup.session.table = {name!r}: expected a plain SQL identifier "
            "(letters, digits, '_'; at most 50 characters), optionally 'schema.table'"
        )
    return tuple(part for part in match.groups() if part)


class PostgresStore(SessionStore):
    """Sessions in PostgreSQL, selected by ``sessup.session.store = postgresql``."""

    name = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        timeout: int,
        table: str = "sessup_sessions",
        pool_size: int = 20,
        connect_timeout: float = 2.0,
        socket_timeout: float = 2.0,
        lock_ttl: float = 60.0,
    ) -> None:
        super().__init__(timeout=timeout)
        parts = parse_table_name(table)
        self.table_name = ".".join(parts)
        base = parts[-1]
        self._t = sql.Identifier(*parts)
        self._index = sql.Identifier(base + "_expires_at")
        self.lock_ttl = lock_ttl
        self._conninfo = self._build_conninfo(url, connect_timeout, socket_timeout)
        self._pool = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            # Waiting for a free (or a new) connection is bounded too.
            timeout=connect_timeout + socket_timeout,
            name="sessup-postgresql",
            open=False,
        )
        self._opened = False
        self._ready = False
        self._setup_lock = threading.Lock()
        self._q = self._queries()

    @classmethod
    def from_settings(cls, values: SessupSettings) -> PostgresStore:
        """Build the store from parsed settings (keys without the ``sessup.`` prefix)."""
        return cls(
            required(values.session.url, "sessup.session.url"),
            timeout=values.session.timeout,
            table=values.session.table or "sessup_sessions",
            pool_size=values.session.pool_size,
            connect_timeout=values.session.connect_timeout,
            socket_timeout=values.session.socket_timeout,
            lock_ttl=max(60.0, 3 * values.session.lock_timeout),
        )

    @staticmethod
    def _build_conninfo(url: str, connect_timeout: float, socket_timeout: float) -> str:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"sessup.session.url is not a valid PostgreSQL URL: {exc}") from None
        ms = max(1, int(socket_timeout * 1000))
        # libpq counts connect_timeout in whole seconds, at least 2.
        extra: dict[str, Any] = {
            "connect_timeout": max(2, math.ceil(connect_timeout)),
            "tcp_user_timeout": ms,
            "options": " ".join(
                filter(None, [str(params.get("options") or ""),
                              f"-c statement_timeout={ms} -c lock_timeout={ms}"])
            ),
        }
        if "application_name" not in params:
            extra["application_name"] = "pyramid_sessup"
        return make_conninfo(url, **extra)

    def _queries(self) -> dict[str, sql.Composed]:
        t = self._t
        expiry = sql.SQL("now() + %(ttl)s * interval '1 second'")
        # A read only slides the expiry: its commit need not wait for the WAL
        # flush (synchronous_commit off for this one transaction).  A database
        # crash in the next fraction of a second can undo the slide, never data;
        # writes of session data stay fully durable.  This turns the commit of
        # every read request from a disk flush (~3 ms) into ~0.2 ms.
        no_wait = sql.SQL("set_config('synchronous_commit', 'off', true) IS NOT NULL")
        fmt = {"t": t, "expiry": expiry, "index": self._index, "no_wait": no_wait, "alive": sql.SQL(_ALIVE),
               "dead": sql.SQL(f"'{TOMBSTONE}'::jsonb"), "keep": sql.SQL(_KEEP_ENTRY).format(t=t)}

        def q(text: str) -> sql.Composed:
            return sql.SQL(text).format(**fmt)

        return {
            "schema": q(
                "CREATE TABLE IF NOT EXISTS {t} (id text PRIMARY KEY, data jsonb NOT NULL,"
                " version bigint NOT NULL DEFAULT 1, expires_at timestamptz NOT NULL);"
                " CREATE INDEX IF NOT EXISTS {index} ON {t} (expires_at)"
            ),
            # A tombstone is returned too (unchanged), so that lookup can tell it from
            # an absent ID and read its forward.
            "load_touch": q(
                "UPDATE {t} SET expires_at = CASE WHEN {alive} THEN {expiry} ELSE expires_at END"
                " WHERE id = %(id)s AND expires_at > now() AND {no_wait} RETURNING data::text"
            ),
            "load": q("SELECT data::text FROM {t} WHERE id = %(id)s AND expires_at > now()"),
            "forward": q("SELECT data #>> '{{}}' FROM {t} WHERE id = %(fwd)s AND expires_at > now()"),
            # An expired row (record or tombstone) that was not purged yet does not make the ID "taken".
            "create": q(
                "INSERT INTO {t} AS s (id, data, version, expires_at) VALUES (%(id)s, %(data)s::jsonb, 1, {expiry})"
                " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, version = s.version + 1,"
                " expires_at = EXCLUDED.expires_at WHERE s.expires_at <= now() RETURNING 1"
            ),
            # The merge happens under the row lock of this UPDATE: atomic per key.
            "update": q(
                "UPDATE {t} SET data = (data || %(changed)s::jsonb) - %(removed)s::text[],"
                " version = version + 1, expires_at = {expiry}"
                " WHERE id = %(id)s AND expires_at > now() AND jsonb_typeof(data) = 'object'"
                " RETURNING data::text"
            ),
            "replace": q(
                "UPDATE {t} SET data = %(data)s::jsonb, version = version + 1, expires_at = {expiry}"
                " WHERE id = %(id)s AND expires_at > now() AND {alive}"
            ),
            # One statement, so atomic: the old row becomes a tombstone under its row
            # lock (a concurrent update then finds it dead), and the new row is
            # inserted only if that happened; a taken new ID aborts both.
            "move": q(
                "WITH dead AS (UPDATE {t} SET data = {dead}, version = version + 1, expires_at = {expiry}"
                " WHERE id = %(old)s AND expires_at > now() AND jsonb_typeof(data) = 'object' RETURNING 1)"
                " INSERT INTO {t} (id, data, version, expires_at)"
                " SELECT %(new)s, %(data)s::jsonb, 1, {expiry} FROM dead RETURNING 1"
            ),
            # The old row is locked first (a concurrent update commits before, or
            # waits and then finds a tombstone), and read as that update left it.
            "rotate": q(
                "WITH prev AS (SELECT id, data FROM {t} WHERE id = %(old)s AND expires_at > now()"
                " AND jsonb_typeof(data) = 'object' AND (%(if_record)s::jsonb IS NULL OR data = %(if_record)s::jsonb)"
                " FOR UPDATE),"
                " dead AS (UPDATE {t} AS s SET data = {dead}, version = s.version + 1, expires_at = {expiry}"
                " FROM prev WHERE s.id = prev.id"
                " RETURNING (prev.data || %(changed)s::jsonb) - %(removed)s::text[] AS data),"
                " fwd AS (INSERT INTO {t} AS f (id, data, version, expires_at)"
                " SELECT %(fwd)s, to_jsonb(%(new)s::text), 1, now() + %(grace)s * interval '1 second' FROM dead"
                " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, version = f.version + 1,"
                " expires_at = EXCLUDED.expires_at)"
                " INSERT INTO {t} (id, data, version, expires_at)"
                " SELECT %(new)s, data, 1, {expiry} FROM dead RETURNING data::text"
            ),
            "touch": q(
                "UPDATE {t} SET expires_at = {expiry} WHERE id = %(id)s AND expires_at > now() AND {alive}"
                " AND {no_wait}"
            ),
            "delete": q(
                "INSERT INTO {t} AS s (id, data, version, expires_at) VALUES (%(id)s, {dead}, 1, {expiry})"
                " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, version = s.version + 1,"
                " expires_at = EXCLUDED.expires_at"
            ),
            # A lock row is taken if absent or expired.  Lock rows live as long as one
            # request: their commits need no WAL flush either (a database crash
            # ends every request holding a lock anyway).
            "take_forward": q(
                "DELETE FROM {t} WHERE id = %(fwd)s RETURNING CASE WHEN expires_at > now() THEN data #>> '{{}}' END"
            ),
            "lock": q(
                "INSERT INTO {t} AS s (id, data, version, expires_at)"
                " SELECT %(lock_id)s, to_jsonb(%(token)s::text), 1, {expiry} WHERE {no_wait}"
                " ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, version = s.version + 1,"
                " expires_at = EXCLUDED.expires_at WHERE s.expires_at <= now() RETURNING 1"
            ),
            "unlock": q(
                "DELETE FROM {t} WHERE id = %(lock_id)s AND data = to_jsonb(%(token)s::text) AND {no_wait}"
            ),
            # A counter row is created if absent and locked in one statement (the
            # no-op DO UPDATE takes the row lock); an expired one reads as empty.
            "counter_lock": q(
                "INSERT INTO {t} AS s (id, data, version, expires_at) VALUES (%(id)s, '{{}}'::jsonb, 1, now())"
                " ON CONFLICT (id) DO UPDATE SET version = s.version"
                " RETURNING CASE WHEN s.expires_at > now() THEN s.data::text END"
            ),
            "counter_set": q(
                "UPDATE {t} SET data = %(data)s::jsonb, version = version + 1, expires_at = {expiry}"
                " WHERE id = %(id)s"
            ),
            # The user index: one row per user key; entries of dead sessions are
            # dropped as the row is linked (under its row lock, so no link is lost).
            "link_user": q(
                "INSERT INTO {t} AS s (id, data, version, expires_at)"
                " VALUES (%(id)s, jsonb_build_object(%(sid)s::text, extract(epoch FROM now())), 1, {expiry})"
                " ON CONFLICT (id) DO UPDATE SET data = (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}')"
                " FROM jsonb_each(CASE WHEN s.expires_at > now() AND jsonb_typeof(s.data) = 'object'"
                " THEN s.data ELSE '{{}}' END) e WHERE {keep}) || EXCLUDED.data,"
                " version = s.version + 1, expires_at = EXCLUDED.expires_at"
            ),
            "unlink_user": q(
                "UPDATE {t} SET data = data - %(sid)s::text, version = version + 1"
                " WHERE id = %(id)s AND jsonb_typeof(data) = 'object' AND data ? %(sid)s::text"
            ),
            "user_sessions": q(
                "SELECT data::text FROM {t} WHERE id = %(id)s AND expires_at > now()"
            ),
            "purge_users": q(
                "UPDATE {t} u SET data = (SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}')"
                " FROM jsonb_each(u.data) e WHERE {keep}), version = u.version + 1"
                f" WHERE left(u.id, {len(_USER_PREFIX)}) = '{_USER_PREFIX}' AND u.expires_at > now()"
                " AND jsonb_typeof(u.data) = 'object'"
                " AND EXISTS (SELECT 1 FROM jsonb_each(u.data) e WHERE NOT {keep})"
            ),
            "purge_empty_users": q(
                f"DELETE FROM {{t}} WHERE left(id, {len(_USER_PREFIX)}) = '{_USER_PREFIX}'"
                " AND data = '{{}}'::jsonb"
            ),
            "ids": q(f"SELECT id FROM {{t}} WHERE expires_at > now() AND {_SESSION_ROW} AND {{alive}}"),
            "count": q(f"SELECT count(*) FROM {{t}} WHERE expires_at > now() AND {_SESSION_ROW} AND {{alive}}"),
            "purge": q(f"DELETE FROM {{t}} WHERE expires_at <= now() AND {_SESSION_ROW}"),
            "purge_locks": q(f"DELETE FROM {{t}} WHERE expires_at <= now() AND NOT {_SESSION_ROW}"),
        }

    # -- connection handling --------------------------------------------------------------
    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        # Kept short: the text may reach a 503 page; addresses stay out of it.
        log.debug("postgresql error: %s", exc)
        return StoreUnavailable(f"PostgreSQL session store unavailable ({type(exc).__name__})")

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``fn(conn)`` on a pooled connection; map outages to StoreUnavailable."""
        if not self._ready:
            self._setup()
        for attempt in (1, 2):
            conn: psycopg.Connection[Any] | None = None
            try:
                with self._pool.connection() as conn:
                    return fn(conn)
            except PoolTimeout as exc:
                # After an outage the pool reconnects with growing delays, so it can
                # time out although the server is back: serve this call on a direct
                # connection instead of answering 503 until the pool catches up.
                return self._run_direct(fn, exc)
            except _UNAVAILABLE as exc:
                # A pooled connection the server closed (restart, idle kill) fails on
                # first use: drop the dead ones and try once more on a fresh one.
                if attempt == 1 and conn is not None and conn.broken:
                    self._pool.check()
                    continue
                raise self._unavailable(exc) from exc
            except psycopg.DataError as exc:
                # e.g. "\u0000" inside a string, which jsonb cannot hold.
                raise SessionValueError(f"session value rejected by PostgreSQL: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_direct(self, fn: Callable[[psycopg.Connection[Any]], T], cause: Exception) -> T:
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                return fn(conn)
        except _UNAVAILABLE as exc:
            raise self._unavailable(cause) from exc
        except psycopg.DataError as exc:
            raise SessionValueError(f"session value rejected by PostgreSQL: {exc}") from exc

    def _setup(self) -> None:
        with self._setup_lock:
            if not self._opened:
                # Opened lazily, so building the store (app start-up, console
                # scripts) never waits for the database or starts threads early.
                self._pool.open(wait=False)
                self._opened = True
            if self._ready:
                return
            try:
                with self._pool.connection() as conn:
                    if not self._table_exists(conn):
                        with conn.transaction():
                            # Serialize schema creation across processes: concurrent
                            # CREATE ... IF NOT EXISTS can still collide in pg_type.
                            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                         ["pyramid_sessup schema " + self.table_name])
                            conn.execute(self._q["schema"])
            except _UNAVAILABLE as exc:
                raise self._unavailable(exc) from exc
            except psycopg.errors.InsufficientPrivilege as exc:
                raise ConfigurationError(
                    f"sessup.session.table: the table {self.table_name} does not exist and this database "
                    f"user may not create it ({exc.diag.message_primary}); "
                    f"create it once as a privileged user (any store "
                    "call does it), then grant SELECT, INSERT, UPDATE, DELETE on it"
                ) from exc
            self._ready = True

    def _table_exists(self, conn: psycopg.Connection[Any]) -> bool:
        # Checked first, so a least-privileged user (no CREATE on the schema)
        # works with a table a DBA created.
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [self._t.as_string(conn)]).fetchone()
        return bool(row and row[0])

    def _one(self, name: str, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        return self._run(lambda conn: conn.execute(self._q[name], params).fetchone())

    def _rowcount(self, name: str, params: Mapping[str, Any]) -> int:
        return self._run(lambda conn: conn.execute(self._q[name], params).rowcount)

    # -- per-request operations ------------------------------------------------------------
    def lookup(self, sid: str, *, touch: bool = True) -> dict[str, Any] | Forward | None:
        if not valid_session_id(sid):
            return None
        row = self._one("load_touch" if touch else "load", {"id": sid, "ttl": self.timeout})
        if row is None:
            return None
        if row[0] == TOMBSTONE:
            found = self._one("forward", {"fwd": _FORWARD_PREFIX + sid})
            target = found[0] if found is not None else None
            return Forward(target) if target is not None and valid_session_id(target) else None
        return loads(row[0], sid)

    def create(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        return self._one("create", {"id": sid, "data": dumps(data), "ttl": self.timeout}) is not None

    def update(self, sid: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               expected: str | None = None) -> dict[str, Any] | None:
        if not valid_session_id(sid):
            return None
        row = self._one("update", {"id": sid, "changed": dumps(changed), "removed": list(removed),
                                   "ttl": self.timeout})
        return None if row is None else loads(row[0], sid)

    def replace(self, sid: str, data: Mapping[str, Any]) -> bool:
        if not valid_session_id(sid):
            return False
        return self._rowcount("replace", {"id": sid, "data": dumps(data), "ttl": self.timeout}) == 1

    def move(self, old: str, new: str, data: Mapping[str, Any]) -> bool:
        if not (valid_session_id(old) and valid_session_id(new)):
            return False
        try:
            return self._one("move", {"old": old, "new": new, "data": dumps(data), "ttl": self.timeout}) is not None
        except psycopg.errors.UniqueViolation:
            return False  # the new ID is taken: the whole statement did nothing

    def rotate(self, old: str, new: str, changed: Mapping[str, Any], removed: Iterable[str], *,
               grace: float, expected: str | None = None, if_record: str | None = None) -> dict[str, Any] | None:
        if not (valid_session_id(old) and valid_session_id(new)) or old == new:
            return None
        params = {"old": old, "new": new, "fwd": _FORWARD_PREFIX + old, "changed": dumps(changed),
                  "removed": list(removed), "grace": grace, "ttl": self.timeout, "if_record": if_record}
        try:
            row = self._one("rotate", params)
        except psycopg.errors.UniqueViolation:
            return None  # the new ID is taken: the whole statement did nothing
        return None if row is None else loads(row[0], new)

    def touch(self, sid: str) -> None:
        if not valid_session_id(sid):
            return
        self._rowcount("touch", {"id": sid, "ttl": self.timeout})

    def delete(self, sid: str) -> str | None:
        if not valid_session_id(sid):
            return None

        def bury(conn: psycopg.Connection[Any]) -> str | None:
            conn.execute(self._q["delete"], {"id": sid, "ttl": self.timeout})
            # Only now, in a fresh snapshot: a rotation that held the row when the
            # tombstone was written has committed its forward.
            row = conn.execute(self._q["take_forward"], {"fwd": _FORWARD_PREFIX + sid}).fetchone()
            return row[0] if row is not None and row[0] and valid_session_id(row[0]) else None

        return self._run(bury)

    # -- locking: a row "lock:<sid>" holding a token, with its own expiry (a crashed
    # holder blocks others at most lock_ttl); waiting polls with short, growing pauses -----
    def acquire_lock(self, sid: str, timeout: float) -> str:
        token = secrets.token_hex(16)
        params = {"lock_id": _LOCK_PREFIX + sid, "token": token, "ttl": self.lock_ttl}
        deadline = time.monotonic() + timeout
        pause = 0.002
        while True:
            if self._one("lock", params) is not None:
                return token
            if time.monotonic() >= deadline:
                break
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 0.05)
        raise SessionLockTimeout(f"session lock not acquired within {timeout:g}s")

    def release_lock(self, sid: str, token: Any) -> None:
        self._rowcount("unlock", {"lock_id": _LOCK_PREFIX + sid, "token": token})

    # -- counters: rows "quota:<key>", read-modify-written under their row lock -----------
    def modify_counter(self, key: str, fn: CounterFn, ttl: float) -> Any:
        if not valid_counter_key(key):
            raise ValueError("not a counter key")
        row_id = _COUNTER_PREFIX + key

        def run(conn: psycopg.Connection[Any]) -> Any:
            with conn.transaction():
                row = conn.execute(self._q["counter_lock"], {"id": row_id}).fetchone()
                current = loads(row[0], key) if row is not None and row[0] is not None else None
                new, result = fn(current)
                if new is not None:
                    conn.execute(self._q["counter_set"], {"id": row_id, "data": dumps(new), "ttl": ttl})
                return result

        return self._run(run)

    # -- the user index: a row "user:<key>" per user ---------------------------------------
    def link_user(self, user_key: str, sid: str) -> None:
        if not (valid_user_key(user_key) and valid_session_id(sid)):
            return
        self._rowcount("link_user", {"id": _USER_PREFIX + user_key, "sid": sid, "ttl": self.index_ttl,
                                     "timeout": self.timeout})

    def unlink_user(self, user_key: str, sid: str) -> None:
        if not valid_user_key(user_key):
            return
        self._rowcount("unlink_user", {"id": _USER_PREFIX + user_key, "sid": sid})

    def user_sessions(self, user_key: str) -> list[tuple[str, float]]:
        if not valid_user_key(user_key):
            return []
        row = self._one("user_sessions", {"id": _USER_PREFIX + user_key})
        entries = loads(row[0], user_key) if row is not None else None
        return [(sid, float(linked)) for sid, linked in (entries or {}).items()
                if isinstance(linked, (int, float)) and not isinstance(linked, bool)]

    # -- operations ------------------------------------------------------------------------
    def ids(self) -> Iterator[str]:
        def fetch(conn: psycopg.Connection[Any]) -> list[str]:
            return [row[0] for row in conn.execute(self._q["ids"])]

        for sid in self._run(fetch):
            if valid_session_id(sid):
                yield sid

    def count(self) -> int:
        row = self._one("count", {})
        return int(row[0]) if row else 0

    def purge_expired(self) -> int:
        def purge(conn: psycopg.Connection[Any]) -> int:
            deleted = conn.execute(self._q["purge"]).rowcount
            conn.execute(self._q["purge_locks"])  # and counters, and user index rows that expired
            conn.execute(self._q["purge_users"], {"timeout": self.timeout})
            conn.execute(self._q["purge_empty_users"])
            return deleted

        return self._run(purge)

    def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless PostgreSQL answers (creates the table if needed)."""
        self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._setup_lock:
            if self._opened:
                self._pool.close()
                self._opened = False
