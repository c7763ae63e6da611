"""A full upload directory: 507, nothing partial kept, and the next upload works.

The directory is a 2 MiB tmpfs when the tests may mount one (root on Linux);
otherwise ENOSPC is injected at the write.
"""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import webtest

from pyramid_sessup.uploads import pipeline, storage

from .conftest import body, leftovers, part, post_body


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, bool]]:
    """(directory, is_real_tmpfs)"""
    path = tmp_path / "small"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if not mounted:
        real_write = pipeline._write_all

        def write(f: Any, data: bytes) -> None:
            if os.fstat(f.fileno()).st_size + len(data) > 2 * 1024 * 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(f, data)

        monkeypatch.setattr(pipeline, "_write_all", write)
    try:
        yield path, mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_gives_507_and_next_upload_succeeds(upapp: Callable[..., webtest.TestApp],
                                                      small_disk: tuple[Path, bool]) -> None:
    path, _ = small_disk
    client = upapp(**{"sessup.upload.path": str(path), "sessup.upload.chunk_size": "65536"})
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        res = post_body(client, body(part("inputFile", b"k" * 100, filename="keep.txt"),
                                     part("inputFile", os.urandom(3 * 1024 * 1024), filename="huge.bin")))
        assert res.status_int == 507, res.text
        assert "full" in res.text
        assert leftovers(path) == []
    assert len(os.listdir("/proc/self/fd")) == before
    ok = post_body(client, body(part("inputFile", b"small", filename="s.txt")), Accept="application/json")
    assert ok.status_int == 200
    assert (path / ok.json["files"][0]["stored_name"]).read_bytes() == b"small"


def test_disk_full_while_committing(upapp: Callable[..., webtest.TestApp], upload_dir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client = upapp()
    calls = {"n": 0}
    real = storage.UploadStorage.write_metadata

    def failing(self: storage.UploadStorage, name: str, metadata: dict) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second file of the request
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, name, metadata)

    monkeypatch.setattr(storage.UploadStorage, "write_metadata", failing)
    res = post_body(client, body(part("inputFile", b"one", filename="1.txt"), part("inputFile", b"two", filename="2.txt")))
    assert res.status_int == 507
    assert leftovers(upload_dir) == []  # the first, already committed file is removed too
