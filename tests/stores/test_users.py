"""Sessions per user (pyramid_sessup.users) over every store: sign-in, the list
of a user's sessions, revoking one or all, expiry and pruning of the user
index, "last seen" bookkeeping, races, and what the raw index holds."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any, Callable

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.request import Request

from pyramid_sessup import SessupSessionFactory
from pyramid_sessup.exceptions import SessionValueError, StoreUnavailable
from pyramid_sessup.stores.base import SessionStore
from pyramid_sessup.users import UsersConfig, list_sessions, revoke_all_sessions, revoke_session

from .backends import _pg

USER = "ann@example.com"
OTHER = "bob@example.com"
#: Rounds of each race; every round must end consistent.
ROUNDS = 30


def browser(client: webtest.TestApp, agent: str = "Browser/1.0", addr: str = "192.0.2.10") -> webtest.TestApp:
    """Another client (its own cookies) of the same application."""
    return webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com", "HTTP_USER_AGENT": agent,
                                                      "REMOTE_ADDR": addr})


def sid_of(client: webtest.TestApp) -> str:
    return client.cookies["sessup"].split(".", 1)[0]


def sign_in(client: webtest.TestApp, user: str = USER) -> dict[str, Any]:
    return client.post("/test/sign-in", {"user": user}).json


def who(client: webtest.TestApp) -> dict[str, Any]:
    return client.get("/test/who").json


def listed(client: webtest.TestApp, **params: str) -> list[dict[str, Any]]:
    return client.get("/test/sessions", params).json["sessions"]


def store_of(client: webtest.TestApp) -> SessionStore:
    return client.app.registry.sessup_store


def users_of(client: webtest.TestApp) -> UsersConfig:
    return UsersConfig.from_values(client.app.registry.sessup_settings)


def index_sids(store: SessionStore, users: UsersConfig, user: str) -> set[str]:
    """Every session ID the store's index holds for ``user``, dead or alive."""
    return {sid for key in users.user_keys(user) for sid, _ in store.user_sessions(key)}


def bound_live(store: SessionStore, user: str) -> set[str]:
    """The truth, found without the index: the live records signed in as ``user``."""
    return {sid for sid in store.ids() if (store.load(sid, touch=False) or {}).get("_user") == user}


def raw_index(store: SessionStore) -> bytes:
    """Everything the backend holds for the user index (names and contents)."""
    if store.name == "memory":
        return repr(store._users).encode()  # type: ignore[attr-defined]
    if store.name == "file":
        directory = store._user_dir  # type: ignore[attr-defined]
        parts = []
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            with open(os.path.join(directory, name), "rb") as f:
                parts.append(name.encode() + b"=" + f.read())
        return b"\n".join(parts)
    if store.name == "redis":
        client = store.client  # type: ignore[attr-defined]
        prefix = store.key_prefix + "user:"  # type: ignore[attr-defined]
        escaped = "".join("\\" + c if c in "*?[]\\^" else c for c in prefix)
        parts = []
        for key in client.scan_iter(match=escaped + "*"):
            parts.append(key + b"=" + b",".join(m for m, _ in client.zrange(key, 0, -1, withscores=True)))
        return b"\n".join(parts)
    rows = _pg(store, "SELECT id, data::text FROM {t} WHERE left(id, 5) = 'user:'")
    return "\n".join(f"{row[0]}={row[1]}" for row in rows).encode()


def in_parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at once (released together); their results, or the exception raised."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # reported by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a request hung"
    return results


# -- sign-in ------------------------------------------------------------------------------


def test_sign_in_regenerates_binds_and_rotates_the_csrf_token(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store = store_of(base)
    a = browser(base)
    a.get("/test/set/k", {"value": "v"})
    old = sid_of(a)
    token = a.get("/csrf").json["csrf_token"]
    assert sign_in(a) == {"user": USER}
    new = sid_of(a)
    assert new != old and store.load(old) is None
    assert who(a) == {"user": USER, "new": False, "data": {"k": "v"}}  # reserved keys never show
    record = store.load(new, touch=False)
    assert record is not None and record["_user"] == USER and record["_agent"] == "Browser/1.0"
    assert "_addr" not in record  # not recorded by default
    # A token issued before the login is refused after it.
    a.post("/session/regenerate", headers={"X-CSRF-Token": token}, status=403)
    # A brand-new session that holds nothing is stored at sign-in all the same.
    b = browser(base)
    sign_in(b)
    assert store.load(sid_of(b), touch=False)["_user"] == USER  # type: ignore[index]
    assert index_sids(store, users_of(base), USER) == {new, sid_of(b)}


def test_sign_in_as_another_user_leaves_the_first_users_list(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store, users = store_of(base), users_of(base)
    a = browser(base)
    sign_in(a, USER)
    assert sign_in(a, OTHER) == {"user": OTHER}
    assert listed(a, user=USER) == []
    assert index_sids(store, users, USER) == set()
    assert [s["handle"] for s in listed(a)] == [users.handle(sid_of(a))]


def test_sign_out_unbinds_and_kills_the_old_id(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store, users = store_of(base), users_of(base)
    a = browser(base)
    sign_in(a)
    cookie, old = a.cookies["sessup"], sid_of(a)
    res = a.post("/test/sign-out")
    assert res.json == {"user": None}
    assert any(v.startswith("sessup=;") for k, v in res.headerlist if k == "Set-Cookie")
    assert store.load(old) is None and index_sids(store, users, USER) == set()
    replay = browser(base)
    replay.set_cookie("sessup", cookie)
    assert who(replay) == {"user": None, "new": True, "data": {}}


# -- the list -----------------------------------------------------------------------------


def test_two_clients_of_one_user_both_list(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    users = users_of(base)
    before = time.time()
    a, b = browser(base, "Browser A/1.0"), browser(base, "Browser B/2.0")
    sign_in(a)
    sign_in(b)
    agents = {sid_of(a): "Browser A/1.0", sid_of(b): "Browser B/2.0"}
    for me, other in ((a, b), (b, a)):
        res = me.get("/test/sessions")
        found = res.json["sessions"]
        assert len(found) == 2
        assert [s["current"] for s in found] == [True, False]  # seen now: the asking session first
        assert found[0]["handle"] == users.handle(sid_of(me))
        assert found[1]["handle"] == users.handle(sid_of(other))
        for info, sid in zip(found, (sid_of(me), sid_of(other))):
            assert len(info["handle"]) == 22 and info["user_agent"] == agents[sid]
            assert info["client_addr"] is None  # record_address is off by default
            assert before <= info["created"] <= info["last_seen"] <= time.time()
        # A session ID is a bearer secret: the page never gets one.
        assert sid_of(a) not in res.text and sid_of(b) not in res.text


def test_address_and_agent_follow_the_settings(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client(**{"sessup.session.users.record_address": "true",
                          "sessup.session.users.record_agent": "false"})
    a = browser(base, "Browser A/1.0", addr="203.0.113.7")
    sign_in(a)
    [info] = listed(a)
    assert (info["client_addr"], info["user_agent"]) == ("203.0.113.7", None)


def test_recorded_agent_is_printable_and_bounded(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    a = browser(base, "Evil\x1b[2J\x07Browser " + "x" * 1000)
    sign_in(a)
    [info] = listed(a)
    assert info["user_agent"].startswith("Evil[2JBrowser x") and len(info["user_agent"]) == 256
    assert info["user_agent"].isprintable()


# -- revoking -----------------------------------------------------------------------------


def test_revoke_all_kills_the_others_at_once_and_keeps_the_current(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store, users = store_of(base), users_of(base)
    a, b, c = browser(base, "A"), browser(base, "B"), browser(base, "C")
    for client in (a, b, c):
        sign_in(client)
    b.get("/test/set/k", {"value": "v"})
    gone = [sid_of(b), sid_of(c)]
    assert a.post("/test/revoke-all").json == {"revoked": 2}
    for client in (b, c):  # the very next request is anonymous
        assert who(client) == {"user": None, "new": True, "data": {}}
    assert all(store.load(sid) is None for sid in gone)
    assert who(a)["user"] == USER
    assert [(s["handle"], s["current"]) for s in listed(a)] == [(users.handle(sid_of(a)), True)]
    # keep_current=False: this session goes too, and its cookie is cleared at once.
    sign_in(b)
    res = a.post("/test/revoke-all", {"keep": "false"})
    assert res.json == {"revoked": 2}
    assert any(v.startswith("sessup=;") for k, v in res.headerlist if k == "Set-Cookie")
    assert who(a)["user"] is None and who(b)["user"] is None
    assert listed(browser(base), user=USER) == []
    assert index_sids(store, users, USER) == set() and bound_live(store, USER) == set()


def test_revoke_one_by_handle_and_never_another_users(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    users = users_of(base)
    a, b, c = browser(base, "A"), browser(base, "B"), browser(base, "C")
    sign_in(a)
    sign_in(b)
    sign_in(c, OTHER)
    handle_b = users.handle(sid_of(b))
    # Another user's session, by its true handle: nothing happens, either way round.
    assert c.post("/test/revoke", {"handle": handle_b}).json == {"revoked": False}
    assert a.post("/test/revoke", {"handle": users.handle(sid_of(c))}).json == {"revoked": False}
    assert who(b)["user"] == USER and who(c)["user"] == OTHER
    # Malformed handles, the session ID itself, a caller not signed in.
    for bad in ("x", sid_of(b), handle_b + "A", handle_b[:-1] + ("A" if handle_b[-1] != "A" else "B")):
        assert a.post("/test/revoke", {"handle": bad}).json == {"revoked": False}
    assert browser(base).post("/test/revoke", {"handle": handle_b}).json == {"revoked": False}
    assert who(b)["user"] == USER
    assert a.post("/test/revoke", {"handle": handle_b}).json == {"revoked": True}
    assert who(b) == {"user": None, "new": True, "data": {}}
    assert a.post("/test/revoke", {"handle": handle_b}).json == {"revoked": False}
    assert [s["handle"] for s in listed(a)] == [users.handle(sid_of(a))]
    # Revoking one's own session signs it out.
    res = a.post("/test/revoke", {"handle": users.handle(sid_of(a))})
    assert res.json == {"revoked": True}
    assert any(v.startswith("sessup=;") for k, v in res.headerlist if k == "Set-Cookie")
    assert who(a)["user"] is None and who(c)["user"] == OTHER


# -- expiry and pruning -------------------------------------------------------------------


def test_expired_session_never_lists_and_its_entry_is_pruned(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client(**{"sessup.session.timeout": "1"})
    store, users = store_of(base), users_of(base)
    a, b = browser(base, "A"), browser(base, "B")
    sign_in(a)
    sign_in(b)
    stale = sid_of(b)
    for _ in range(4):  # a stays alive (touched: no "last seen" write, which prunes too), b idles past the timeout
        time.sleep(0.4)
        store.touch(sid_of(a))
    assert stale in index_sids(store, users, USER)
    # Listed by a client not signed in (a's own request would re-link a, which prunes too).
    assert [s["handle"] for s in listed(browser(base), user=USER)] == [users.handle(sid_of(a))]
    assert stale not in index_sids(store, users, USER)  # the listing pruned it
    assert store.load(stale) is None and who(b)["user"] is None


def test_purge_expired_and_linking_prune_dead_entries(store_factory: Callable[..., SessionStore]) -> None:
    import secrets

    store = store_factory(timeout=1)
    new = lambda: secrets.token_urlsafe(32)  # noqa: E731
    purged, linked, young = "1" * 64, "2" * 64, "3" * 64
    live, expired, buried, absent = new(), new(), new(), new()
    for sid in (live, expired, buried):
        assert store.create(sid, {"_user": USER})
    store.delete(buried)
    for key in (purged, linked):
        for sid in (live, expired, buried, absent):
            store.link_user(key, sid)
    time.sleep(0.6)
    store.touch(live)
    time.sleep(0.6)
    store.touch(live)  # live; expired has been idle 1.2 s
    pending = new()  # linked just now, its record about to be written: never pruned
    store.link_user(young, pending)
    store.purge_expired()
    assert {sid for sid, _ in store.user_sessions(purged)} == {live}
    assert {sid for sid, _ in store.user_sessions(young)} == {pending}
    store.link_user(linked, pending)  # linking prunes the user's dead entries too
    assert {sid for sid, _ in store.user_sessions(linked)} == {live, pending}


def test_index_contract(store: SessionStore) -> None:
    import secrets

    key = "a" * 64
    one, two = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert store.user_sessions(key) == []
    before = time.time()
    store.link_user(key, one)
    store.link_user(key, two)
    store.link_user(key, one)  # again: still one entry, its time refreshed
    entries = dict(store.user_sessions(key))
    assert set(entries) == {one, two}
    assert all(before - 1 <= t <= time.time() + 1 for t in entries.values())
    store.unlink_user(key, one)
    store.unlink_user(key, one)
    store.unlink_user("b" * 64, two)  # another user's index: nothing
    assert [sid for sid, _ in store.user_sessions(key)] == [two]
    # Malformed keys and IDs are refused quietly, never reach the backend.
    for bad_key in ("../" + "a" * 61, "A" * 64, "a" * 63, "a" * 64 + "\n"):
        store.link_user(bad_key, two)
        assert store.user_sessions(bad_key) == []
    for bad_sid in ("../etc/passwd", "x", two + "x"):
        store.link_user(key, bad_sid)
    assert [sid for sid, _ in store.user_sessions(key)] == [two]
    # Index entries are not sessions.
    assert list(store.ids()) == [] and store.count() == 0


# -- "last seen" ------------------------------------------------------------------------------


def test_seen_written_at_most_once_per_interval(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client(**{"sessup.session.users.seen_interval": "1"})
    store = store_of(base)
    writes: Counter[str] = Counter()
    for name in ("update", "replace", "create", "move", "link_user"):
        def spy(*args: Any, _name: str = name, _real: Any = getattr(store, name), **kw: Any) -> Any:
            writes[_name] += 1
            return _real(*args, **kw)

        setattr(store, name, spy)  # counts what the session layer writes
    a = browser(base)
    sign_in(a)
    sid = sid_of(a)
    seen = store.load(sid, touch=False)["_seen"]  # type: ignore[index]
    writes.clear()
    for _ in range(10):
        assert who(a)["user"] == USER
        listed(a)
    assert writes == Counter()
    assert store.load(sid, touch=False)["_seen"] == seen  # type: ignore[index]
    time.sleep(1.1)
    responses = [a.get("/test/who") for _ in range(10)]
    assert writes == Counter({"update": 1, "link_user": 1})
    assert store.load(sid, touch=False)["_seen"] > seen  # type: ignore[index]
    # Bookkeeping is no change of the session: no cookie goes out for it.
    assert all("Set-Cookie" not in res.headers for res in responses)


# -- races ------------------------------------------------------------------------------------


def test_sign_in_racing_revoke_all_leaves_no_stray_session(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store, users = store_of(base), users_of(base)
    x = browser(base, "X")
    sign_in(x)
    failures = []
    for round_ in range(ROUNDS):
        y = browser(base, "Y")
        if round_ % 2:
            sign_in(y)  # a signed-in session signs in again, or a fresh one signs in
        results = in_parallel(lambda: sign_in(y), lambda: x.post("/test/revoke-all").json)
        if any(isinstance(r, Exception) for r in results):
            failures.append((round_, "error", results))
            continue
        truth = bound_live(store, USER)
        shown = {s["handle"] for s in listed(x)}
        if shown != {users.handle(sid) for sid in truth}:
            failures.append((round_, "listed-but-dead or live-but-unlisted", shown, truth))
        y_sid = sid_of(y) if "sessup" in y.cookies else None
        y_user = who(y)["user"]
        if (y_user == USER) != (y_sid in truth):
            failures.append((round_, "the client disagrees with the store", y_user))
        x.post("/test/revoke-all")  # the next round starts with x alone
    assert failures == []
    assert bound_live(store, USER) == {sid_of(x)}


def test_regenerate_racing_list_never_loses_the_session(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store, users = store_of(base), users_of(base)
    move = store.move

    def slow_move(*args: Any) -> bool:
        time.sleep(0.005)  # widen the window between the index link and the move
        return move(*args)

    store.move = slow_move  # type: ignore[method-assign]
    a, b = browser(base, "A"), browser(base, "B")
    sign_in(a)
    sign_in(b)
    failures = []
    for round_ in range(ROUNDS):
        before = sid_of(a)
        _, during = in_parallel(lambda: a.post("/test/regenerate"), lambda: listed(b))
        if isinstance(during, Exception):
            failures.append((round_, "error", during))
            continue
        allowed = {users.handle(sid) for sid in (before, sid_of(a), sid_of(b))}
        if not {s["handle"] for s in during} <= allowed or users.handle(sid_of(b)) not in {s["handle"] for s in during}:
            failures.append((round_, "a listing shows what it should not", during))
        truth = bound_live(store, USER)
        if truth != {sid_of(a), sid_of(b)} or {s["handle"] for s in listed(b)} != {users.handle(s) for s in truth}:
            failures.append((round_, "a session went missing", truth))
    assert failures == []


def test_a_crash_after_the_move_leaves_the_session_listed(make_client: Callable[..., webtest.TestApp]) -> None:
    """Sign-in links the index entry before the record moves: a request that dies
    right after the move (store gone, process killed) leaves no bound session
    out of the list, where it could not be revoked."""
    base = make_client()
    store, users = store_of(base), users_of(base)
    a, b = browser(base, "A"), browser(base, "B")
    sign_in(a)
    sign_in(b)
    move = store.move

    def move_then_fail(*args: Any) -> bool:
        move(*args)
        raise StoreUnavailable("the store went away after the move")

    store.move = move_then_fail  # type: ignore[method-assign]
    a.post("/test/sign-in", {"user": USER}, status=503)
    store.move = move  # type: ignore[method-assign]
    truth = bound_live(store, USER)
    assert len(truth) == 2 and sid_of(a) not in truth  # a's session lives on under an ID a never got
    assert {s["handle"] for s in listed(b)} == {users.handle(sid) for sid in truth}
    assert b.post("/test/revoke-all").json == {"revoked": 1}
    assert bound_live(store, USER) == {sid_of(b)}


# -- what the store holds -----------------------------------------------------------------------


def test_raw_index_holds_no_user_id(make_client: Callable[..., webtest.TestApp]) -> None:
    base = make_client()
    store, users = store_of(base), users_of(base)
    for agent in ("A", "B"):
        sign_in(browser(base, agent))
    raw = raw_index(store)
    assert users.user_key(USER).encode() in raw  # the index is there, under the HMAC
    for form in (USER, USER.upper(), "ann", "example.com"):
        assert form.encode() not in raw and form.encode("utf-16-le") not in raw


# -- secrets rotate ---------------------------------------------------------------------------

FIRST = "first-secret-of-the-rotation-test-0123456789"
SECOND = "second-secret-of-the-rotation-test-012345678"


def host(store: SessionStore, secrets: list[str], **options: Any) -> webtest.TestApp:
    """A host app configured in Python over ``store`` (as a second process would be)."""
    config = Configurator(settings={})
    config.set_session_factory(SessupSessionFactory(secrets, store=store, **options))

    def sign_in_view(request: Request) -> dict[str, Any]:
        request.session.sign_in(request.params["user"])
        return {"user": request.session.user_id}

    views = {
        "sign-in": sign_in_view,
        "sessions": lambda request: {"sessions": [i.__dict__ for i in list_sessions(request)]},
        "revoke": lambda request: {"revoked": revoke_session(request, request.params["handle"])},
        "revoke-all": lambda request: {"revoked": revoke_all_sessions(request)},
        "who": lambda request: {"user": request.session.user_id, "new": request.session.new,
                                "data": dict(request.session.items())},
    }
    for name, view in views.items():
        config.add_route(name, f"/test/{name}")
        config.add_view(view, route_name=name, renderer="json")
    return webtest.TestApp(config.make_wsgi_app(), extra_environ={"HTTP_HOST": "example.com"})


def test_secret_rotation_keeps_every_session_listed(store: SessionStore) -> None:
    old = host(store, [FIRST])
    a, b = browser(old, "A"), browser(old, "B")
    sign_in(a)
    sign_in(b)
    old_users = UsersConfig.from_values(_values([FIRST]))
    # A new first secret: every user key and handle changes, nothing is lost.
    rotated = host(store, [SECOND, FIRST], users_seen_interval=0)
    new_users = UsersConfig.from_values(_values([SECOND, FIRST]))
    a2, b2 = browser(rotated, "A"), browser(rotated, "B")
    a2.set_cookie("sessup", a.cookies["sessup"])
    b2.set_cookie("sessup", b.cookies["sessup"])
    found = listed(a2)
    assert {s["handle"] for s in found} == {new_users.handle(sid_of(a)), new_users.handle(sid_of(b))}
    assert old_users.handle(sid_of(b)) != new_users.handle(sid_of(b))
    # A handle shown before the rotation still names the session.
    assert a2.post("/test/revoke", {"handle": old_users.handle(sid_of(b))}).json == {"revoked": True}
    assert who(b2)["user"] is None
    # Seen again (interval 0: at once), a's session is re-linked under the new key...
    assert who(a2)["user"] == USER
    assert sid_of(a) in {sid for sid, _ in store.user_sessions(new_users.user_key(USER))}
    # ...so it still lists once the old secret is dropped.
    final = host(store, [SECOND])
    a3 = browser(final, "A")
    a3.set_cookie("sessup", a2.cookies["sessup"])  # re-signed with the new secret
    assert [s["handle"] for s in listed(a3)] == [new_users.handle(sid_of(a))]


def _values(secrets: list[str]) -> Any:
    from pyramid_sessup.settings import parse_settings

    return parse_settings({"sessup.session.secret": " ".join(secrets)}, environ={})


def test_user_ids_are_checked(store: SessionStore) -> None:
    app = host(store, [FIRST])
    for bad in ("", "x" * 1025, "a\x00b"):
        with pytest.raises(SessionValueError):
            app.post("/test/sign-in", {"user": bad})
    assert list(store.ids()) == []


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_seen_interval_must_be_whole_seconds(value: str) -> None:
    from pyramid.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="sessup.session.users.seen_interval"):
        _values_with({"sessup.session.users.seen_interval": value})


def _values_with(settings: dict[str, str]) -> Any:
    from pyramid_sessup.settings import parse_settings

    return parse_settings({"sessup.session.secret": FIRST, **settings}, environ={})


def test_id_rotation_keeps_a_signed_in_session_listed_under_its_new_id(
        make_client: Callable[..., webtest.TestApp]) -> None:
    """A rotation (sessup.session.rotate_after) moves a signed-in session like a login
    does: the index holds the new ID, not the old one, the list still shows the
    session as current, and revoke-all from another device ends it."""
    base = make_client(**{"sessup.session.rotate_after": "3600", "sessup.session.rotate_grace": "1"})
    store, users = store_of(base), users_of(base)
    a, b = browser(base, "A"), browser(base, "B")
    sign_in(a)
    sign_in(b)
    old = sid_of(a)
    assert base.get("/test/due", {"sid": old}).json == {"aged": True}
    assert who(a)["user"] == USER  # this request rotates the ID
    new = sid_of(a)
    assert new != old
    assert index_sids(store, users, USER) >= {new, sid_of(b)} and old not in index_sids(store, users, USER)
    assert [(s["handle"], s["current"]) for s in listed(a)][0] == (users.handle(new), True)
    assert {s["handle"] for s in listed(b)} == {users.handle(new), users.handle(sid_of(b))}
    assert b.post("/test/revoke-all").json == {"revoked": 1}
    assert who(a) == {"user": None, "new": True, "data": {}}
    assert bound_live(store, USER) == {sid_of(b)}
