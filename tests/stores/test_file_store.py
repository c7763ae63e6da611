"""The file store's in-place writes (padded, never shrinking, never seen
half-written), and its working folders deleted or broken while it runs."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pytest
import webtest

from pyramid_sessup.signing import new_session_id
from pyramid_sessup.stores.file import FileStore

from . import app as app_module

T = TypeVar("T")


def test_shorter_record_is_padded_in_place(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), timeout=60)
    sid = new_session_id()
    store.create(sid, {"v": "x" * 500})
    path = Path(store._record_path(sid))
    inode, size = path.stat().st_ino, path.stat().st_size
    store.update(sid, {"v": "short"}, [])
    assert path.stat().st_ino == inode  # overwritten, not replaced
    assert path.stat().st_size == size  # padded, not truncated
    assert path.read_bytes().rstrip(b" ") == b'{"v":"short"}'
    assert store.load(sid) == {"v": "short"}
    store.update(sid, {"v": "y" * 900}, [])  # longer: grows in place
    assert store.load(sid) == {"v": "y" * 900}


def test_readers_never_see_a_half_written_record(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), timeout=60)
    sid = new_session_id()
    values = ["a" * 3000, "b", "c" * 9000, "d" * 40]
    store.create(sid, {"v": values[0]})
    stop = threading.Event()
    bad: list[object] = []

    def writer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            store.update(sid, {"v": values[i % len(values)]}, [])
            i += 1

    def reader() -> None:
        for _ in range(1500):
            data = store.load(sid)
            if data is None or data.get("v") not in values:
                bad.append(data)

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in readers:
        t.join(120)
    stop.set()
    for t in writers:
        t.join(30)
    assert bad == []


# -- working folders deleted or broken while the application runs ----------------------------

def _in_fresh_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread of its own, as a new server worker would (no state of
    the thread that set the store up)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert errors == [], errors
    return result[0]


@pytest.fixture
def file_app(settings: dict[str, Any]) -> Iterator[Callable[..., webtest.TestApp]]:
    apps: list[Any] = []

    def make(**overrides: str) -> webtest.TestApp:
        app = app_module.main({}, **{**settings, "sessup.session.store": "file", **overrides})
        apps.append(app)
        return webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})

    yield make
    for app in apps:
        app.registry.sessup_store.close()


@pytest.mark.parametrize("lock", ["false", "true"])
def test_deleted_folder_is_recreated_and_never_500(file_app: Callable[..., webtest.TestApp], settings: dict[str, Any],
                                                   lock: str) -> None:
    client = file_app(**{"sessup.session.lock": lock})
    folder = Path(settings["sessup.session.file.path"])
    assert [client.get("/test/incr").json["count"] for _ in range(2)] == [1, 2]
    for _ in range(3):
        shutil.rmtree(folder)
        # The sessions went with their folder: the next request starts a new one...
        assert _in_fresh_thread(lambda: client.get("/test/incr").json["count"]) == 1
        # ...which is stored again, in a recreated folder.
        assert _in_fresh_thread(lambda: client.get("/test/incr").json["count"]) == 2
        assert client.app.registry.sessup_store.count() == 1


@pytest.mark.parametrize("policy", ["fail", "anonymous"])
def test_unusable_folder_answers_by_the_store_down_policy(file_app: Callable[..., webtest.TestApp],
                                                          settings: dict[str, Any], policy: str) -> None:
    client = file_app(**{"sessup.session.on_store_error": policy})
    folder = Path(settings["sessup.session.file.path"])
    client.get("/test/incr")
    cookie = client.cookies["sessup"]
    shutil.rmtree(folder)
    folder.write_text("not a folder")  # root ignores permissions; a file in the way stops it too
    with_cookie = {"Cookie": f"sessup={cookie}"}
    # (A cookieless read needs no store at all: not among these.)
    for path, headers in [("/test/incr", with_cookie), ("/test/info", with_cookie), ("/test/incr", {})]:
        res = _in_fresh_thread(lambda: webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com"}).get(
            path, headers=headers, expect_errors=True))
        if policy == "fail":
            assert res.status_int == 503 and res.headers["Retry-After"], (path, res.status)
        else:
            assert res.status_int == 200 and "Set-Cookie" not in res.headers, (path, res.status)
    folder.unlink()
    assert client.get("/test/incr").json["count"] == 1  # served again, in a recreated folder
    assert client.get("/test/incr").json["count"] == 2


def test_merges_stay_locked_while_working_files_vanish(tmp_path: Path) -> None:
    """Writers come and go (each a new thread, as server workers do) merging their own
    keys into one session, while another thread keeps deleting every file of the
    store that is not a record (lock files, temporary files, any ``.merge`` folder)
    and purging: no merge is lost and no call fails."""
    folder = tmp_path / "sessions"
    store = FileStore(str(folder), timeout=60)
    sid = new_session_id()
    store.create(sid, {"base": True})
    stop = threading.Event()
    errors: list[BaseException] = []

    def vandal() -> None:
        while not stop.is_set():
            for root, dirs, files in os.walk(folder):
                for name in files:
                    if not name.endswith(".json"):
                        try:
                            os.unlink(os.path.join(root, name))
                        except FileNotFoundError:
                            pass
                if ".merge" in dirs:
                    shutil.rmtree(os.path.join(root, ".merge"), ignore_errors=True)
            store.purge_expired()
            time.sleep(0.0005)

    def writer(wave: int, i: int) -> None:
        try:
            for n in range(10):
                assert store.update(sid, {f"w{wave}k{i}": n}, []) is not None
                assert store.load(sid) is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    chaos = threading.Thread(target=vandal)
    chaos.start()
    try:
        for wave in range(30):
            threads = [threading.Thread(target=writer, args=(wave, i)) for i in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
    finally:
        stop.set()
        chaos.join(30)
    assert errors == []
    expected = {"base": True, **{f"w{wave}k{i}": 9 for wave in range(30) for i in range(6)}}
    assert store.load(sid) == expected
