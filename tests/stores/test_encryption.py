"""Encryption at rest (``sessup.session.encrypt``) over every store: what a dump of
the real Redis, PostgreSQL, the session files or the memory store's internals
shows, the session flows through the app, tampering, copied records, secret
rotation and its races."""
from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import sys
import threading
from typing import Any, Callable
from urllib.parse import quote

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request

from pyramid_sessup import SessupSessionFactory
from pyramid_sessup.settings import parse_settings
from pyramid_sessup.stores import make_store
from pyramid_sessup.stores.base import SessionStore
from pyramid_sessup.stores.encrypted import EncryptedStore

from . import test_contract as contract
from .backends import _pg, plant, raw_record
from .test_session_over_stores import _clone, _parallel

MakeClient = Callable[..., webtest.TestApp]
ENCRYPT = {"sessup.session.encrypt": "true"}
OLD = "old-secret-of-the-rotation-test-0123456789"
NEW = "new-secret-of-the-rotation-test-0123456789"

#: Distinctive key names and values: none may appear in a dump, in any encoding JSON gives them.
KEY_NAMES = ("favouritecolourzq", "shoppingbasketxk")
VALUES = ("turquoise-marmalade-8817", "雪の結晶-4242")


def new_sid() -> str:
    return secrets.token_urlsafe(32)


def inner_of(client: webtest.TestApp) -> SessionStore:
    store = client.app.registry.sessup_store
    assert isinstance(store, EncryptedStore)
    return store.inner


def sid_of(client: webtest.TestApp, name: str = "sessup") -> str:
    return client.cookies[name].partition(".")[0]


def dump(store: SessionStore) -> bytes:
    """Everything the backend holds for this test, read under the store: what a leaked
    Redis dump, database backup, copy of the session directory or memory image shows."""
    if store.name == "memory":
        records = store._records.items()  # type: ignore[attr-defined]
        return "\n".join(f"{sid} {text}" for sid, (text, _) in records).encode()
    if store.name == "file":
        chunks = []
        for root, _, files in os.walk(store.path):  # type: ignore[attr-defined]
            for name in sorted(files):
                with open(os.path.join(root, name), "rb") as f:
                    chunks.append(name.encode() + b"\n" + f.read())
        return b"\n".join(chunks)
    if store.name == "redis":
        client = store.client  # type: ignore[attr-defined]
        prefix = store.key_prefix  # type: ignore[attr-defined]
        escaped = "".join("\\" + c if c in "*?[]\\^" else c for c in prefix)
        return b"\n".join(key + b" " + (client.get(key) or b"") for key in client.scan_iter(match=escaped + "*"))
    return "\n".join(row[0] for row in _pg(store, "SELECT t::text FROM {t} AS t")).encode()


def plaintext_forms(text: str) -> list[bytes]:
    """``text`` as it could appear in stored bytes: UTF-8, or JSON-escaped."""
    return [text.encode(), json.dumps(text).strip('"').encode()]


def fill(client: webtest.TestApp) -> None:
    for key, value in zip(KEY_NAMES, VALUES):
        client.get(f"/test/set/{key}?value={quote(value)}")


def test_a_dump_reveals_no_value_and_no_key_name(make_client: MakeClient) -> None:
    client = make_client(**ENCRYPT)
    fill(client)
    data = client.get("/test/set/third?value=x").json  # and the app reads everything back
    assert {key: data[key] for key in KEY_NAMES} == dict(zip(KEY_NAMES, VALUES))
    inner = inner_of(client)
    raw = raw_record(inner, sid_of(client))  # Redis GET, SELECT of the row, the file's bytes, the dict
    everything = dump(inner)
    assert raw is not None
    for secret in KEY_NAMES + VALUES:
        for form in plaintext_forms(secret):
            assert form not in raw and form not in everything, (secret, form)
    # The control: the same detector does find them when encryption is off.
    plain = make_client()
    fill(plain)
    assert all(any(form in dump(plain.app.registry.sessup_store) for form in plaintext_forms(secret))
               for secret in KEY_NAMES + VALUES)


def test_session_flows_work_encrypted(make_client: MakeClient) -> None:
    client = make_client(**ENCRYPT)
    assert [client.get("/session").json["views"] for _ in range(3)] == [1, 2, 3]
    fill(client)
    assert client.get("/test/info").json == {"new": False, "count": 0}
    # Regenerate: same data under a new ID; the old cookie is dead.
    old_cookie = client.cookies["sessup"]
    old = sid_of(client)
    assert client.post("/test/regenerate").json == {"regenerated": True}
    assert sid_of(client) != old
    assert client.get("/session").json["views"] == 4
    store = client.app.registry.sessup_store
    assert store.load(old, touch=False) is None
    replay = webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com"})
    replay.set_cookie("sessup", old_cookie)
    assert replay.get("/session").json["views"] == 1
    # Invalidate: the record becomes a tombstone; the old cookie finds an empty session.
    current, current_cookie = sid_of(client), client.cookies["sessup"]
    client.post("/test/destroy")
    assert store.load(current, touch=False) is None
    replay = webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com"})
    replay.set_cookie("sessup", current_cookie)
    assert replay.get("/session").json["views"] == 1


def test_overlapping_writes_of_different_keys_all_persist(make_client: MakeClient) -> None:
    """8 requests of one session, each writing its own key, overlap; 12 rounds, 0 lost."""
    client = make_client(**ENCRYPT)
    client.get("/test/set/start")
    lost = 0
    for round_ in range(12):
        _parallel(8, lambda i, r=round_: _clone(client).get(f"/test/set/k{i}?delay=0.01&value=r{r}v{i}"))
        data = client.app.registry.sessup_store.load(sid_of(client), touch=False)
        lost += sum(data.get(f"k{i}") != f"r{round_}v{i}" for i in range(8))
    assert lost == 0


def _entries(inner: SessionStore, sid: str) -> dict[str, str]:
    raw = raw_record(inner, sid)
    assert raw is not None
    return json.loads(raw)


def _flip_a_byte(token: str) -> str:
    key_id, _, body = token.partition(".")
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return key_id + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.mark.parametrize("how", ["flip a byte", "swap two values", "unknown secret", "plaintext"])
def test_tampered_value_is_dropped_and_the_request_succeeds(
        make_client: MakeClient, how: str, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(**ENCRYPT)
    fill(client)
    client.get("/session")
    inner, sid = inner_of(client), sid_of(client)
    entries = _entries(inner, sid)
    store = client.app.registry.sessup_store
    by_key = {store._open(sid, name, token)[1]: name for name, token in entries.items()}
    target = by_key[KEY_NAMES[0]]
    if how == "flip a byte":
        entries[target] = _flip_a_byte(entries[target])
    elif how == "swap two values":  # each value is bound to its stored name
        other = by_key[KEY_NAMES[1]]
        entries[target], entries[other] = entries[other], entries[target]
    elif how == "unknown secret":
        stranger = EncryptedStore(inner, ["a-secret-this-app-does-not-have-0123456789"])
        entries[target] = stranger._seal(sid, target, [KEY_NAMES[0], "planted"])
    else:
        entries[target] = VALUES[0]
    plant(inner, sid, json.dumps(entries).encode())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pyramid_sessup.stores"):
        data = client.get("/test/set/after?value=1", status=200).json
    assert KEY_NAMES[0] not in data and data["views"] == 1
    assert (KEY_NAMES[1] in data) is (how != "swap two values")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and sid[:8] in warnings[0] and "do not decrypt" in warnings[0]
    assert client.get("/session", status=200).json["views"] == 2


def test_a_record_copied_to_another_session_does_not_decrypt(make_client: MakeClient) -> None:
    alice = make_client(**ENCRYPT)
    fill(alice)
    mallory = webtest.TestApp(alice.app, extra_environ={"HTTP_HOST": "example.com"})
    mallory.get("/test/set/mine?value=m")
    inner = inner_of(alice)
    plant(inner, sid_of(mallory), raw_record(inner, sid_of(alice)) or b"")  # a raw copy, under mallory's ID
    data = mallory.get("/test/set/probe?value=1", status=200).json
    assert not set(KEY_NAMES) & set(data) and VALUES[0] not in json.dumps(data, ensure_ascii=False)
    data = alice.get("/test/set/probe?value=1").json  # the original still reads
    assert {key: data[key] for key in KEY_NAMES} == dict(zip(KEY_NAMES, VALUES))


# -- secret rotation ----------------------------------------------------------------------


def host_app(secret_list: list[str], inner: SessionStore) -> webtest.TestApp:
    """An app configured in Python, with the store instance shared across rotations
    (the memory store too)."""
    config = Configurator()
    config.set_session_factory(SessupSessionFactory(secret_list, store=inner, encrypt=True))

    def set_key(request: Request) -> dict[str, Any]:
        request.session[request.matchdict["key"]] = request.params["value"]
        return dict(request.session)

    def read(request: Request) -> dict[str, Any]:
        return dict(request.session)

    config.add_route("set", "/set/{key}")
    config.add_route("read", "/read")
    config.add_view(set_key, route_name="set", renderer="json")
    config.add_view(read, route_name="read", renderer="json")
    return webtest.TestApp(config.make_wsgi_app(), extra_environ={"HTTP_HOST": "example.com"})


def key_ids(inner: SessionStore, sid: str) -> set[str]:
    return {token.partition(".")[0] for token in _entries(inner, sid).values()}


def test_rotation_keeps_records_readable_and_reencrypts_them(store: SessionStore) -> None:
    old_id = EncryptedStore(store, [OLD]).key_id
    new_id = EncryptedStore(store, [NEW]).key_id
    before = host_app([OLD], store)
    expected = {"user": "alice", "cart": "3 apples", "theme": "dark"}
    writer, reader = before, webtest.TestApp(before.app, extra_environ={"HTTP_HOST": "example.com"})
    for client in (writer, reader):
        for key, value in expected.items():
            client.get(f"/set/{key}?value={quote(value)}")
        assert key_ids(store, sid_of(client)) == {old_id}

    rotated = host_app([NEW, OLD], store)
    # A session that writes after the rotation: the new value and the old ones, all under NEW.
    rotated.set_cookie("sessup", writer.cookies["sessup"])
    assert rotated.get("/set/cart?value=4%20pears").json == {**expected, "cart": "4 pears"}
    assert key_ids(store, sid_of(rotated)) == {new_id}
    # One per key, _created and _issued: no old one left.
    assert len(_entries(store, sid_of(rotated))) == len(expected) + 2
    # A session that only reads: its old record loads, and is re-encrypted on the way.
    second = webtest.TestApp(rotated.app, extra_environ={"HTTP_HOST": "example.com"})
    second.set_cookie("sessup", reader.cookies["sessup"])
    assert second.get("/read").json == expected
    assert key_ids(store, sid_of(second)) == {new_id}
    second.get("/set/user?value=bob")  # a write after the re-encryption
    assert key_ids(store, sid_of(second)) == {new_id}

    # The old secret dropped: both sessions (cookies re-issued under NEW) keep their data.
    after = host_app([NEW], store)
    for client, first, data in ((rotated, writer, {**expected, "cart": "4 pears"}),
                                (second, reader, {**expected, "user": "bob"})):
        assert client.cookies["sessup"] != first.cookies["sessup"]
        after.set_cookie("sessup", client.cookies["sessup"])
        assert after.get("/read").json == data


@pytest.mark.parametrize("op", ["write", "remove"])
def test_reencryption_never_undoes_a_concurrent_write_or_removal(store: SessionStore, op: str) -> None:
    """Right after a rotation, readers (each load re-encrypts) race a writer that sets
    one key or removes it; 25 rounds: the key always ends as the writer left it, and the
    other keys as they were."""
    old = EncryptedStore(store, [OLD])
    failures = 0
    for _ in range(25):
        sid = new_sid()
        old.create(sid, {"k": "original", **{f"o{i}": i for i in range(6)}})
        rotated = [EncryptedStore(store, [NEW, OLD]) for _ in range(4)]  # like four processes
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait(30)
                if i == 0:  # the writer: its first write is the one most likely to meet a re-encryption
                    for n in range(5):
                        if op == "remove":
                            rotated[0].update(sid, {"w": n}, ["k"] if n == 0 else [])
                        else:
                            rotated[0].update(sid, {"k": n}, [])
                else:
                    for _ in range(5):
                        rotated[i].load(sid)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        data = EncryptedStore(store, [NEW, OLD]).load(sid, touch=False)
        wanted = {**({"k": 4} if op == "write" else {"w": 4}), **{f"o{i}": i for i in range(6)}}
        failures += data != wanted
        failures += key_ids(store, sid) != {rotated[0].key_id}
    assert failures == 0


def test_a_key_met_under_several_names_reads_as_its_last_write(store: SessionStore) -> None:
    """The order F0, R0, F1, R1 (F: written, R: re-encrypted; the digit: the secret's
    place), on records planted entry by entry; a read leaves one entry per key, under NEW."""
    new, old = EncryptedStore(store, [NEW]), EncryptedStore(store, [OLD])
    rotated = EncryptedStore(store, [NEW, OLD])

    def entry(wrapper: EncryptedStore, slot: bytes, sid: str, plain: list[Any]) -> tuple[str, str]:
        name = wrapper._keys[0].name(slot, sid, plain[0])
        return name, wrapper._seal(sid, name, plain)

    cases = {  # key -> its entries, and what it must read as (None: absent)
        "written-beats-reencrypted": ([(new, b"F", "last"), (new, b"R", "before")], "last"),
        "removal-beats-reencrypted": ([(new, b"F", None), (new, b"R", "before")], None),
        "reencrypted-beats-old": ([(new, b"R", "last"), (old, b"F", "before")], "last"),
        "old-written-beats-old-reencrypted": ([(old, b"R", "before"), (old, b"F", "last")], "last"),
        "old-removal": ([(old, b"F", None), (old, b"R", "before")], None),
    }
    sid = new_sid()
    store.create(sid, {"seed": "x"})
    planted = {}
    for key, (entries, _) in cases.items():
        for wrapper, slot, value in entries:
            name, token = entry(wrapper, slot, sid, [key] if value is None else [key, value])
            planted[name] = token
    plant(store, sid, json.dumps(planted).encode())
    wanted = {key: value for key, (_, value) in cases.items() if value is not None}
    assert rotated.load(sid, touch=False) == wanted
    assert len(_entries(store, sid)) == len(planted)  # a look changes nothing
    assert rotated.load(sid) == wanted  # a load re-encrypts
    assert rotated.load(sid, touch=False) == wanted == new.load(sid, touch=False)
    names = _entries(store, sid)
    assert key_ids(store, sid) == {new.key_id}
    # Left: the 5 entries planted under NEW (losers too, until their key is written), and
    # the one old winner, now under NEW; the 5 old entries are gone.
    assert sum(1 for name in names if name in planted) == 5 and len(names) == 6
    assert rotated.update(sid, {}, ["written-beats-reencrypted", "removal-beats-reencrypted"]) == {
        key: value for key, value in wanted.items() if key != "written-beats-reencrypted"}
    assert len(_entries(store, sid)) == 4  # 2 re-encrypted winners, and 2 removal markers


# -- the store contract, through the wrapper ----------------------------------------------------

CONTRACT = [
    contract.test_absent_and_malformed_ids,
    contract.test_create_load_roundtrip,
    contract.test_update_merges_and_removes,
    contract.test_replace_overwrites_only_a_present_record,
    contract.test_delete_of_an_absent_id_kills_it_too,
    contract.test_ids_and_count,
    contract.test_lock_excludes_and_times_out,
    contract.test_concurrent_writers_of_different_keys_all_persist,
    contract.test_update_with_the_loaded_record_merges,
    contract.test_concurrent_swaps_lose_nothing,
]


@pytest.mark.parametrize("secret_list", [[NEW], [NEW, OLD]], ids=["one-secret", "two-secrets"])
@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__.removeprefix("test_"))
def test_the_store_contract_holds_through_encryption(store: SessionStore, check: Callable[[SessionStore], None],
                                                     secret_list: list[str]) -> None:
    check(EncryptedStore(store, secret_list))


@pytest.mark.parametrize("kill", ["delete", "move"])
def test_writers_racing_a_logout_never_revive_it_through_encryption(store: SessionStore, kill: str) -> None:
    contract.test_writers_racing_a_logout_never_revive_it(EncryptedStore(store, [NEW, OLD]), kill)


# -- configuration ------------------------------------------------------------------------------


def test_bad_encrypt_value_stops_start_up_naming_the_key(make_client: MakeClient) -> None:
    with pytest.raises(ConfigurationError, match=r"sessup\.session\.encrypt"):
        make_client(**{"sessup.session.encrypt": "maybe"})
    with pytest.raises(ConfigurationError, match=r"sessup\.session\.encrypt"):
        SessupSessionFactory(NEW, encrypt="sometimes")  # type: ignore[arg-type]


def test_encrypt_without_the_cryptography_package_stops_start_up_naming_the_key(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    # What an environment without the package looks like to an import (None in sys.modules).
    for name in [n for n in sys.modules if n == "cryptography" or n.startswith("cryptography.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    monkeypatch.delitem(sys.modules, "pyramid_sessup.stores.encrypted")
    values = parse_settings({"sessup.session.secret": NEW, "sessup.session.store": "file",
                             "sessup.session.file.path": str(tmp_path / "s"), **ENCRYPT}, environ={})
    with pytest.raises(ConfigurationError, match=r"sessup\.session\.encrypt = true needs the cryptography package"
                                                 r".*pyramid_sessup\[encrypt\]"):
        make_store(values)
    assert not (tmp_path / "s").exists()  # refused before the store was built
    with pytest.raises(ConfigurationError, match=r"sessup\.session\.encrypt"):
        SessupSessionFactory(NEW, encrypt=True)


def test_encryption_is_off_by_default_and_wraps_a_store_instance(store: SessionStore) -> None:
    values = parse_settings({"sessup.session.secret": NEW}, environ={})
    assert values.session.encrypt is False
    assert not isinstance(make_store(values), EncryptedStore)
    app = host_app([NEW], store)  # SessupSessionFactory(store=<instance>, encrypt=True)
    app.get("/set/a?value=1")
    names = set(_entries(store, sid_of(app)))
    assert len(names) == 3 and not names & {"a", "_created", "_issued"}
