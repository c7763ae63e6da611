"""Working folders (.tmp, .meta, .tus) removed while the server runs are
recreated on demand, never through a symlink; a removed upload directory is a
clear 507 with a log line, never a 500."""
from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from .conftest import PATHS, everything, stored

WORKING = [".tmp", ".meta", ".tus"]


@pytest.mark.parametrize("path", PATHS)
def test_removed_working_folders_are_recreated(visitor: Any, upload_dir: Path, path: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    client = visitor()
    assert client.upload(path, "first.txt", b"1").status_int in (200, 204)
    caplog.set_level(logging.WARNING, "pyramid_sessup.uploads")
    for _ in range(2):
        for name in WORKING:
            shutil.rmtree(upload_dir / name, ignore_errors=True)
        res = client.upload(path, "again.txt", b"2")
        assert res.status_int in (200, 204), res.text
    for name in (".tmp", ".meta"):
        mode = (upload_dir / name).stat().st_mode & 0o777
        assert (upload_dir / name).is_dir() and mode == 0o700
    assert sorted((upload_dir / n).read_bytes() for n in stored(upload_dir)) == [b"1", b"2", b"2"]
    assert any("recreated" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("folder", WORKING)
def test_a_symlink_in_place_of_a_working_folder_is_never_followed(
        visitor: Any, upload_dir: Path, tmp_path: Path, path: str, folder: str,
        caplog: pytest.LogCaptureFixture) -> None:
    client = visitor()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(upload_dir / folder, ignore_errors=True)
    os.symlink(elsewhere, upload_dir / folder)
    caplog.set_level(logging.ERROR, "pyramid_sessup.uploads")
    res = client.upload(path, "a.txt", b"secret")
    if path == "tus" and folder != ".tus" or path != "tus" and folder == ".tus":
        # The path does not use that folder... except tus, which stores through .tmp and .meta too.
        assert res.status_int in (200, 204, 507)
    else:
        assert res.status_int == 507, res.text
        assert str(tmp_path) not in res.text
        assert any(folder in r.getMessage() and "symlink" in r.getMessage() for r in caplog.records)
    assert list(elsewhere.iterdir()) == []  # nothing was ever written through the link
    assert (upload_dir / folder).is_symlink()  # and it was not replaced behind the admin's back


@pytest.mark.parametrize("path", PATHS)
def test_removed_upload_directory_is_507_with_a_log_line(visitor: Any, upload_dir: Path, path: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    client = visitor()
    client.token()
    shutil.rmtree(upload_dir)
    caplog.set_level(logging.ERROR, "pyramid_sessup.uploads")
    res = client.upload(path, "a.txt", b"data")
    assert res.status_int == 507, res.text
    assert "missing" in res.text and str(upload_dir) not in res.text
    assert any(str(upload_dir) in r.getMessage() and "missing" in r.getMessage() for r in caplog.records)
    assert not upload_dir.exists()  # not recreated: it may be an unmounted volume
    upload_dir.mkdir()
    assert client.upload(path, "b.txt", b"back").status_int in (200, 204)


def test_cleanup_job_removing_empty_folders_during_uploads(visitor: Any, upload_dir: Path) -> None:
    """A job rmdir()ing the working folders whenever they are empty, racing
    with uploads: every upload succeeds (none is lost to a vanished folder)."""
    client = visitor(**{"sessup.upload.require_csrf": "false"})
    stop = threading.Event()
    removed = [0]

    def janitor() -> None:
        while not stop.is_set():
            for name in WORKING:
                try:
                    os.rmdir(upload_dir / name)  # only succeeds when empty, like `find -empty -delete`
                    removed[0] += 1
                except OSError:
                    pass

    thread = threading.Thread(target=janitor, daemon=True)
    thread.start()
    statuses = []
    try:
        for i in range(150):
            res = client.app.post("/upFile", upload_files=[("inputFile", f"{i}.txt", b"%d" % i)], status="*")
            statuses.append(res.status_int)
    finally:
        stop.set()
        thread.join(10)
    failures = [s for s in statuses if s != 200]
    assert failures == [] and removed[0] > 0
    assert len(stored(upload_dir)) == 150
    assert all(n.startswith(".meta/") or "/" not in n for n in everything(upload_dir))
