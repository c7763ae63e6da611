"""The storage interface, the same promises from each backend: the upload
directory and a bucket of the S3 server process (``backend``)."""
from __future__ import annotations

import time
from typing import Any

import pytest

from pyramid_sessup.settings import parse_settings
from pyramid_sessup.uploads.storage import NAME_PATTERN, TEMP_ID_PATTERN, Storage, make_storage

from .conftest import Backend


@pytest.fixture
def store(backend: Backend, settings: dict[str, Any]) -> Storage:
    return make_storage(parse_settings(settings))


def write_temp(store: Storage, data: bytes) -> str:
    out, handle = store.open_temp()
    out.write(data)
    out.close()
    return handle


def test_temp_then_finalize_makes_it_visible_with_metadata(store: Storage, backend: Backend) -> None:
    handle = write_temp(store, b"hello")
    assert store.temp_files() == [handle] and backend.stored() == []
    meta = {"filename": "h\u00e9llo.txt", "size": 5, "sha256": "ab" * 32}
    name = store.finalize(handle, "txt", metadata=meta)
    assert NAME_PATTERN.fullmatch(name) and name.endswith(".txt")
    assert store.temp_files() == [] and backend.temps() == []
    assert backend.stored() == [name] and backend.read(name) == b"hello"
    assert store.metadata(name) == meta
    download = store.open_download(name)
    assert download is not None and download.size == 5 and download.metadata == meta
    assert abs(download.modified - time.time()) < 300
    assert b"".join(download.iter_range()) == b"hello"
    download = store.open_download(name)
    assert download is not None and b"".join(download.iter_range(1, 4)) == b"ell"
    download.close()


def test_finalize_without_extension_or_metadata(store: Storage, backend: Backend) -> None:
    name = store.finalize(write_temp(store, b""), "")
    assert "." not in name and len(name) == 32
    assert store.metadata(name) is None
    assert backend.read(name) == b""


def test_finalize_refuses_bad_handles_and_extensions(store: Storage, backend: Backend) -> None:
    handle = write_temp(store, b"x")
    for ext in ("PHP", "a/b", "x" * 11, ".txt"):
        with pytest.raises(ValueError):
            store.finalize(handle, ext)
    for bad in ("/etc/passwd", "../x", "", "uploads/" + "A" * 32):
        with pytest.raises(ValueError):
            store.finalize(bad, "txt")
        with pytest.raises(ValueError):
            store.discard(bad)
    store.discard(handle)
    assert backend.leftovers() == []


def test_abort_and_discard_leave_nothing(store: Storage, backend: Backend) -> None:
    out, handle = store.open_temp()
    out.write(b"x" * (6 * 1024 * 1024))  # past one S3 part: a multipart upload is under way
    out.abort()
    out.abort()  # idempotent
    assert backend.leftovers() == []
    handle = write_temp(store, b"kept")
    store.discard(handle)
    store.discard(handle)  # already gone: no error
    assert backend.leftovers() == []


def test_temp_ids_round_trip_and_reject_anything_else(store: Storage) -> None:
    handle = write_temp(store, b"abc")
    temp_id = store.temp_id(handle)
    assert TEMP_ID_PATTERN.fullmatch(temp_id)
    assert store.temp_path_for(temp_id) == handle
    for bad in ("../" + temp_id, temp_id + ".part", "G" * 32, "", None, 5, temp_id[:-1]):
        assert store.temp_path_for(bad) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.temp_id("/etc/passwd")
    store.discard(handle)
    assert store.temp_path_for(temp_id) is None


@pytest.mark.parametrize("name", ["", ".", "..", "../x", ".tmp", ".meta", "A" * 31, "A" * 33, "A" * 32 + ".",
                                  "A" * 32 + ".PHP", "A" * 32 + "/x", "/etc/passwd", "A" * 32 + ".txt\x00",
                                  "A" * 32 + ".aaaaaaaaaaa", ".tmp/" + "A" * 32, None, 5])
def test_malformed_names_are_nothing(store: Storage, name: object) -> None:
    assert store.open_download(name) is None  # type: ignore[arg-type]
    assert store.metadata(name) is None  # type: ignore[arg-type]
    assert store.delete(name) is False  # type: ignore[arg-type]


def test_delete(store: Storage, backend: Backend) -> None:
    name = store.finalize(write_temp(store, b"x"), "bin", metadata={"a": 1})
    assert store.delete(name)
    assert store.open_download(name) is None and store.metadata(name) is None
    assert not store.delete(name)
    assert backend.leftovers() == []


def test_names_are_fresh(store: Storage) -> None:
    names = {store.finalize(write_temp(store, b"x"), "txt") for _ in range(20)}
    assert len(names) == 20


def test_sweep_removes_only_stale_temporaries(store: Storage, backend: Backend) -> None:
    kept = write_temp(store, b"recent")
    name = store.finalize(write_temp(store, b"stored"), "txt")
    assert store.sweep(3600) == 0
    assert store.temp_files() == [kept]
    assert store.sweep(0, now=time.time() + 10) == 1
    assert store.temp_files() == [] and backend.stored() == [name]
