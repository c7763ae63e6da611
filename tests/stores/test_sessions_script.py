"""``sessup-sessions INI count|list|show|delete|purge-expired`` end to end, as
an operator runs it (a subprocess on an INI), for the file, Redis,
PostgreSQL and memory stores."""
from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from pyramid_sessup.scripts import sessions as sessions_script
from pyramid_sessup.settings import parse_settings
from pyramid_sessup.stores import make_store
from pyramid_sessup.stores.base import SessionStore

from ..support import POSTGRES_URL, REDIS_URL, write_ini
from .backends import expire_now, expired_left, plant, raw_record

SCRIPT = str(Path(sys.executable).with_name("sessup-sessions"))


def run(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, str(ini), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(params=[
    pytest.param("file", id="file"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
])
def setup(request: pytest.FixtureRequest, tmp_path: Path):
    """An INI for one store, and the same store opened in the test to arrange records."""
    kind = request.param
    overrides = {"sessup.session.store": kind, "sessup.session.timeout": "600",
                 "sessup.upload.path": str(tmp_path / "uploads")}
    if kind == "file":
        overrides["sessup.session.file.path"] = str(tmp_path / "sessions")
    elif kind == "redis":
        overrides.update({"sessup.session.url": REDIS_URL,
                          "sessup.session.key_prefix": request.getfixturevalue("redis_namespace")})
    else:
        overrides.update({"sessup.session.url": POSTGRES_URL,
                          "sessup.session.table": request.getfixturevalue("postgres_table")})
    ini = write_ini(tmp_path, overrides)
    prefixed = {k: v for k, v in overrides.items()}
    store = make_store(parse_settings({"sessup.session.secret": "x" * 40, **prefixed}))
    yield ini, store
    store.close()


def new_sid() -> str:
    return secrets.token_urlsafe(32)


def dash_sid() -> str:
    return "-" + new_sid()[1:]


def test_count_list_show_delete(setup: tuple[Path, SessionStore]) -> None:
    ini, store = setup
    assert run(ini, "count").stdout == "0\n"
    # An ID may start with "-": it is still an ID, not an option.
    sids = [new_sid(), dash_sid(), new_sid()]
    for i, sid in enumerate(sids):
        store.create(sid, {"views": i, "name": "Zoë"})
    result = run(ini, "count")
    assert (result.returncode, result.stdout) == (0, "3\n")
    assert sorted(run(ini, "list").stdout.split()) == sorted(sids)
    for sid, views in ((sids[0], 0), (sids[1], 1)):
        shown = run(ini, "show", sid)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == {"views": views, "name": "Zoë"}
    deleted = run(ini, "delete", sids[1])
    assert (deleted.returncode, deleted.stdout) == (0, f"deleted {sids[1]}\n")
    assert store.load(sids[1]) is None
    assert sorted(run(ini, "list").stdout.split()) == sorted([sids[0], sids[2]])


def test_show_does_not_extend_a_session(setup: tuple[Path, SessionStore]) -> None:
    ini, store = setup
    sid = new_sid()
    store.create(sid, {"a": 1})
    expire_now(store, sid)
    assert run(ini, "show", sid).returncode == 1


def test_purge_expired_leaves_no_expired_record(setup: tuple[Path, SessionStore]) -> None:
    ini, store = setup
    live = [new_sid() for _ in range(2)]
    dead = [new_sid() for _ in range(3)]
    for sid in live + dead:
        store.create(sid, {"a": 1})
    for sid in dead:
        expire_now(store, sid)
    result = run(ini, "purge-expired")
    assert result.returncode == 0
    purged = 0 if store.name == "redis" else 3  # Redis expires records by itself
    assert result.stdout == f"purged {purged} expired record(s)\n"
    assert expired_left(store) == 0
    assert sorted(run(ini, "list").stdout.split()) == sorted(live)


def test_tombstones_are_not_sessions_and_expired_ones_are_purged(setup: tuple[Path, SessionStore]) -> None:
    ini, store = setup
    live, gone, gone_long_ago = new_sid(), new_sid(), new_sid()
    for sid in (live, gone, gone_long_ago):
        store.create(sid, {"a": 1})
    store.delete(gone)
    assert run(ini, "delete", gone_long_ago).returncode == 0
    assert (run(ini, "count").stdout, run(ini, "list").stdout) == ("1\n", live + "\n")
    assert run(ini, "show", gone).returncode == 1
    assert run(ini, "delete", gone).returncode == 1  # nothing readable: already dead
    expire_now(store, gone_long_ago)
    result = run(ini, "purge-expired")
    purged = 0 if store.name == "redis" else 1  # Redis expires tombstones by itself
    assert result.stdout == f"purged {purged} expired record(s)\n"
    assert raw_record(store, gone_long_ago) is None and expired_left(store) == 0
    assert json.loads(raw_record(store, gone) or b"") is None  # a live tombstone stays
    assert store.create(gone, {"a": 2}) is False


@pytest.fixture(autouse=True)
def keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # In process, the INI's logging configuration would replace pytest's handlers.
    monkeypatch.setattr(sessions_script, "setup_logging", lambda config_uri: None)


def call(ini: Path, *args: str) -> tuple[int, str, str]:
    """The same command in process: quicker for the error paths."""
    out, err = io.StringIO(), io.StringIO()
    status = sessions_script.main([str(ini), *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_unknown_malformed_and_corrupt_ids(setup: tuple[Path, SessionStore]) -> None:
    ini, store = setup
    missing = new_sid()
    for command in ("show", "delete"):
        status, out, err = call(ini, command, missing)
        assert status == 1 and "no" in err and out == ""
        for bad in ("../../etc/passwd", "short", "*", missing + "x"):
            status, out, err = call(ini, command, bad)
            assert status == 2 and "not a session ID" in err
        assert call(ini, command)[0] == 2  # ID missing
    status, _, err = call(ini, "show", dash_sid())
    assert status == 1 and "no session" in err
    corrupt = new_sid()
    plant(store, corrupt, b"\x80\x04garbage")
    assert call(ini, "show", corrupt)[0] == 1
    result = run(ini, "delete", corrupt)  # unreadable, but removed all the same
    assert result.returncode == 1 and "nothing is left" in result.stderr
    assert store.count() == 0
    assert run(ini, "list").stdout == ""


def test_memory_store_is_empty_from_outside(tmp_path: Path) -> None:
    ini = write_ini(tmp_path, {"sessup.session.store": "memory", "sessup.upload.path": str(tmp_path / "u")})
    result = run(ini, "count")
    assert (result.returncode, result.stdout) == (0, "0\n")
    assert "memory store" in result.stderr
    assert run(ini, "purge-expired").stdout == "purged 0 expired record(s)\n"


def test_bad_usage_and_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ini = write_ini(tmp_path, {"sessup.session.store": "memory", "sessup.session.timout": "5"})
    result = run(ini, "count")
    assert result.returncode == 2 and "sessup.session.timeout" in result.stderr  # did you mean
    assert call(tmp_path / "missing.ini", "count")[0] == 2
    with pytest.raises(SystemExit) as exit_:
        call(ini, "frobnicate")
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.redis
def test_store_down_exit_status(tmp_path: Path) -> None:
    from ..support import free_port

    ini = write_ini(tmp_path, {"sessup.session.store": "redis",
                               "sessup.session.url": f"redis://127.0.0.1:{free_port()}/0",
                               "sessup.session.connect_timeout": "0.3"})
    result = run(ini, "count")
    assert result.returncode == 3 and "unavailable" in result.stderr
