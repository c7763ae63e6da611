"""UploadStorage: exclusive temporary files, atomic commit, strict look-up, sweep."""
from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from pyramid_sessup.uploads import storage as storage_mod
from pyramid_sessup.uploads.storage import NAME_PATTERN, UploadStorage


@pytest.fixture
def store(upload_dir: Path) -> UploadStorage:
    return UploadStorage(str(upload_dir))


def visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("."))


def test_temp_file_is_private_and_finalized_atomically(store: UploadStorage, upload_dir: Path) -> None:
    f, temp = store.open_temp()
    with f:
        f.write(b"hello")
    assert Path(temp).parent == upload_dir / ".tmp"
    assert stat.S_IMODE(os.stat(temp).st_mode) == 0o600
    name = store.finalize(temp, "txt", metadata={"filename": "h\u00e9llo.txt"})
    assert NAME_PATTERN.fullmatch(name) and name.endswith(".txt")
    assert not os.path.exists(temp)
    assert store.path_of(name) == str(upload_dir / name)
    assert (upload_dir / name).read_bytes() == b"hello"
    assert store.metadata(name) == {"filename": "h\u00e9llo.txt"}
    assert store.temp_files() == []
    assert visible(upload_dir) == [name]


def test_metadata_written_in_place_and_a_leftover_replaced(store: UploadStorage, upload_dir: Path) -> None:
    """A new name's metadata is created in place (private, no temporary left); a
    left-over file of that name, say from a crash, is replaced whole."""
    f, temp = store.open_temp()
    with f:
        f.write(b"x")
    name = store.finalize(temp, "txt", metadata={"filename": "a.txt"})
    meta = upload_dir / ".meta" / f"{name}.json"
    assert stat.S_IMODE(meta.stat().st_mode) == 0o600
    meta.write_text('{"filename": "left over, and longer than the new one"}')
    store.write_metadata(name, {"filename": "b.txt"})
    assert store.metadata(name) == {"filename": "b.txt"}
    assert sorted(p.name for p in (upload_dir / ".meta").iterdir()) == [f"{name}.json"]


def test_finalize_without_extension_and_fsync(upload_dir: Path) -> None:
    store = UploadStorage(str(upload_dir), fsync=True)
    f, temp = store.open_temp()
    f.close()
    name = store.finalize(temp, "")
    assert "." not in name and len(name) == 32
    assert store.metadata(name) is None


def test_finalize_never_overwrites(store: UploadStorage, upload_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = upload_dir / ("A" * 32 + ".txt")
    existing.write_bytes(b"keep me")
    tokens = iter(["A" * 32, "A" * 32, "B" * 32])
    f, temp = store.open_temp()
    f.write(b"new")
    f.close()
    monkeypatch.setattr(storage_mod, "_token", lambda: next(tokens))
    name = store.finalize(temp, "txt")
    assert name == "B" * 32 + ".txt"
    assert existing.read_bytes() == b"keep me"
    assert (upload_dir / name).read_bytes() == b"new"


def test_open_temp_refuses_symlinks(store: UploadStorage, upload_dir: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "outside"
    target.write_bytes(b"secret")
    os.symlink(target, upload_dir / ".tmp" / ("C" * 32 + ".part"))
    tokens = iter(["C" * 32, "D" * 32])
    monkeypatch.setattr(storage_mod, "_token", lambda: next(tokens))
    f, temp = store.open_temp()
    f.close()
    assert temp.endswith("D" * 32 + ".part")
    assert target.read_bytes() == b"secret"


@pytest.mark.parametrize("name", ["", ".", "..", "../x", ".tmp", ".meta", "A" * 31, "A" * 33, "A" * 32 + ".",
                                  "A" * 32 + ".PHP", "A" * 32 + "/x", "/etc/passwd", "A" * 32 + ".txt\x00",
                                  "A" * 32 + ".aaaaaaaaaaa", None, 5])
def test_path_of_rejects_malformed_names(store: UploadStorage, name: object) -> None:
    assert store.path_of(name) is None  # type: ignore[arg-type]
    assert store.metadata(name) is None  # type: ignore[arg-type]


def test_path_of_unknown_and_symlinked(store: UploadStorage, upload_dir: Path, tmp_path: Path) -> None:
    assert store.path_of("E" * 32) is None
    (tmp_path / "outside").write_bytes(b"x")
    os.symlink(tmp_path / "outside", upload_dir / ("F" * 32))
    assert store.path_of("F" * 32) is None
    assert store.open_stored("F" * 32) is None


def test_append_and_temp_ids(store: UploadStorage) -> None:
    f, temp = store.open_temp()
    f.write(b"abc")
    f.close()
    temp_id = store.temp_id(temp)
    assert store.temp_path_for(temp_id) == temp
    assert store.temp_path_for("../" + temp_id) is None
    assert store.temp_path_for("G" * 32) is None
    with store.open_append(temp) as g:
        g.write(b"def")
    assert store.temp_size(temp) == 6
    with pytest.raises(ValueError):
        store.open_append("/etc/passwd")
    store.discard(temp)
    store.discard(temp)  # already gone: no error
    with pytest.raises(FileNotFoundError):
        store.open_append(temp)


def test_sweep_removes_only_stale_temps(store: UploadStorage, upload_dir: Path) -> None:
    old_f, old = store.open_temp()
    old_f.close()
    new_f, new = store.open_temp()
    new_f.close()
    past = time.time() - 7200
    os.utime(old, (past, past))
    stray = upload_dir / ".tmp" / "not-ours.txt"
    stray.write_bytes(b"")
    os.utime(stray, (past, past))
    assert store.sweep(3600) == 1
    assert not os.path.exists(old) and os.path.exists(new) and stray.exists()
    assert store.sweep(0, now=time.time() + 10) == 1
    assert store.temp_files() == []


def test_delete(store: UploadStorage) -> None:
    f, temp = store.open_temp()
    f.close()
    name = store.finalize(temp, "bin", metadata={"a": 1})
    assert store.delete(name)
    assert store.path_of(name) is None and store.metadata(name) is None
    assert not store.delete(name)
