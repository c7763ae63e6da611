"""The session-backed temp store, on a real UploadStorage with an injected clock."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyramid_sessup.forms.tempstore import SESSION_KEY, SessionTempStore
from pyramid_sessup.uploads.pipeline import StoredFile
from pyramid_sessup.uploads.storage import UploadStorage


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def storage(upload_dir: Path) -> UploadStorage:
    return UploadStorage(str(upload_dir))


def received(storage: UploadStorage, data: bytes, filename: str = "a.txt") -> StoredFile:
    out, path = storage.open_temp()
    with out:
        out.write(data)
    return StoredFile(field="inputFile", filename=filename, content_type="text/plain", size=len(data),
                      sha256="0" * 64, temp_path=path)


def test_adopt_keeps_metadata_as_json_and_bytes_on_disk(storage: UploadStorage) -> None:
    session: dict = {}
    clock = Clock()
    store = SessionTempStore(session, storage, max_age=60, now=clock)
    entry = store.adopt(received(storage, b"hello"))
    assert len(entry["uid"]) >= 20
    json.dumps(session)  # JSON only
    assert session[SESSION_KEY][entry["uid"]]["size"] == 5
    path = store.temp_path(entry["uid"])
    assert path is not None and Path(path).read_bytes() == b"hello"
    assert store.get(entry["uid"])["filename"] == "a.txt"
    assert entry["uid"] in store and len(store) == 1


def test_expired_entries_and_files_are_removed(storage: UploadStorage) -> None:
    session: dict = {}
    clock = Clock()
    store = SessionTempStore(session, storage, max_age=60, now=clock)
    old = store.adopt(received(storage, b"old"))
    clock.now += 30
    new = store.adopt(received(storage, b"new"))
    clock.now += 31
    assert store.purge_expired() == 1
    assert store.get(old["uid"]) is None and store.get(new["uid"]) is not None
    assert len(storage.temp_files()) == 1
    clock.now += 60
    assert store.get(new["uid"]) is None  # get() also notices expiry
    assert storage.temp_files() == [] and SESSION_KEY not in session


def test_missing_file_means_missing_entry(storage: UploadStorage) -> None:
    session: dict = {}
    store = SessionTempStore(session, storage, max_age=60)
    entry = store.adopt(received(storage, b"x"))
    storage.discard(store.temp_path(entry["uid"]))
    assert store.get(entry["uid"]) is None and len(store) == 0


def test_remove_pop_clear(storage: UploadStorage) -> None:
    session: dict = {}
    store = SessionTempStore(session, storage, max_age=60)
    a, b, c = (store.adopt(received(storage, bytes([i]))) for i in range(3))
    store.remove(a["uid"])
    assert len(storage.temp_files()) == 2
    assert store.pop(b["uid"])["uid"] == b["uid"]
    assert len(storage.temp_files()) == 2  # pop forgets but keeps the file (it is being stored)
    store.clear()
    assert len(storage.temp_files()) == 1 and SESSION_KEY not in session


def test_oldest_entries_go_beyond_max_entries(storage: UploadStorage) -> None:
    session: dict = {}
    clock = Clock()
    store = SessionTempStore(session, storage, max_age=600, max_entries=2, now=clock)
    uids = []
    for i in range(3):
        clock.now += 1
        uids.append(store.adopt(received(storage, bytes([i])))["uid"])
    assert store.get(uids[0]) is None and len(store) == 2 and len(storage.temp_files()) == 2


@pytest.mark.parametrize("uid", [None, 5, "", "../x", "nope", ["list"]])
def test_unknown_or_malformed_uids(storage: UploadStorage, uid: object) -> None:
    store = SessionTempStore({}, storage, max_age=60)
    assert store.get(uid) is None and uid not in store


def test_tampered_entry_cannot_point_outside(storage: UploadStorage, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    session = {SESSION_KEY: {"u": {"uid": "u", "filename": "x", "mimetype": "text/plain", "size": 1,
                                   "sha256": "0", "temp_id": "../../victim", "created": 0}}}
    store = SessionTempStore(session, storage, max_age=1e12)
    assert store.get("u") is None
    store.clear()
    assert victim.read_bytes() == b"keep me"


@pytest.mark.parametrize("outcome", ["kept", "stored"])
@pytest.mark.parametrize("n", [1, 50, 400])
def test_form_post_encodes_the_kept_files_a_constant_number_of_times(make_form, monkeypatch: pytest.MonkeyPatch,
                                                                      n: int, outcome: str) -> None:
    """The temp store's entries are one session value: a form with n files must
    encode it a fixed number of times, not once per file (quadratic work)."""
    import pyramid_sessup.session as session_module

    form = make_form(**{"sessup.upload.max_files": "1000"})
    real = session_module._encode
    counts = {"entries": 0, "bytes": 0}

    def counting(key: str, value: object) -> str:
        encoded = real(key, value)
        if key == SESSION_KEY:
            counts["entries"] += 1
            counts["bytes"] += len(encoded)
        return encoded

    monkeypatch.setattr(session_module, "_encode", counting)
    # "kept": a description over its limit fails validation, so every file is
    # kept in the temp store; "stored": every file goes through and is popped.
    description = "d" * 5000 if outcome == "kept" else "fine"
    page = form.post([(f"f{i}.txt", b"x") for i in range(n)], description=description, status="*")
    assert page.status_int == (400 if outcome == "kept" else 200)
    # Loading the session, and saving it at the end of the request: never per file.
    assert counts["entries"] <= 3, counts
