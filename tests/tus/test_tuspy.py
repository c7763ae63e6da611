"""tuspy (the Python tus client from PyPI) against real waitress: 100 MiB in
5 MiB chunks, interrupted, resumed by a new uploader, stored byte-exact."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from tusclient import client as tusclient  # tuspy is a test dependency: a missing install fails the run

from ..support import free_port, running_server
from .servers import TUS, Client, tus_ini

pytestmark = [pytest.mark.server, pytest.mark.slow]

MiB = 1024 * 1024


def test_tuspy_interrupted_and_resumed(tmp_path: Path) -> None:
    upload_dir = tmp_path / "uploads"
    source = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(source, "wb") as f:
        for _ in range(100):
            block = os.urandom(MiB)
            digest.update(block)
            f.write(block)
    port = free_port()
    with running_server(tus_ini(tmp_path / "srv", upload_dir, tmp_path / "sessions", port), port) as server:
        browser = Client()
        # The visitor cookie (GET /csrf sets it) will own the upload; clients send it themselves.
        assert browser.request("GET", server.url + "/csrf").status == 200
        client = tusclient.TusClient(server.url + "/files/", headers={"Cookie": browser.cookie})

        first = client.uploader(file_path=str(source), chunk_size=5 * MiB, metadata={"filename": "big.bin"})
        for _ in range(7):  # 35 MiB, then the client goes away
            first.upload_chunk()
        assert first.offset == 35 * MiB
        url = first.url
        assert url.startswith(server.url + "/files/")
        del first

        second = client.uploader(file_path=str(source), chunk_size=5 * MiB, url=url, upload_checksum=True)
        assert second.offset == 35 * MiB  # found by HEAD
        second.upload()
        assert second.offset == 100 * MiB

        head = browser.request("HEAD", url, headers=TUS)
        assert head.status == 200 and head.headers["upload-offset"] == str(100 * MiB)
        assert head.headers["sessup-file-sha256"] == digest.hexdigest()
        result = browser.request("GET", url).json()
        assert result["filename"] == "big.bin" and result["size"] == 100 * MiB

        download = browser.request("GET", server.url + result["url"])
        assert download.status == 200
        assert hashlib.sha256(download.body).hexdigest() == digest.hexdigest()
        assert not list((upload_dir / ".tmp").iterdir())
