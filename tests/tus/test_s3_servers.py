"""tus on object storage behind real servers: two pserve processes share a
bucket (of the S3 server process) and nothing else; a client begins an upload
through one and finishes it through the other, and the first serves the
file; then tus-js-client does the same, resuming on the second server the
upload it began on the first."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import pytest

from ..s3 import S3Server
from ..support import Server, free_port, start_server, write_ini
from .conftest import OCTETS, meta
from .servers import TUS, Client, node
from .servers import run as run_node

pytestmark = pytest.mark.server

MiB = 1024 * 1024
PREFIX = "uploads/"


def serve(directory: Path, s3_server: S3Server, bucket: str) -> Server:
    """A pserve process storing in ``bucket``, with directories of its own."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {**s3_server.settings(bucket, PREFIX), "sessup.upload.path": str(directory / "uploads"),
                "sessup.session.file.path": str(directory / "sessions"),
                "sessup.upload.max_file_size": str(64 * MiB), "sessup.upload.max_total_size": str(64 * MiB)}
    return start_server(write_ini(directory, settings, port=port), port)


@pytest.fixture
def two_servers(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> Iterator[tuple[Server, Server]]:
    first = serve(tmp_path / "a", s3_server, s3_bucket)
    try:
        second = serve(tmp_path / "b", s3_server, s3_bucket)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def nothing_local(tmp_path: Path) -> list[str]:
    return [str(p) for side in ("a", "b") for p in (tmp_path / side / "uploads").rglob("*") if p.is_file()]


def tus_keys(server: S3Server, bucket: str) -> list[str]:
    return [k for k in server.keys(bucket) if k.startswith(PREFIX + ".tus/")]


def test_begin_on_one_server_finish_on_the_other(two_servers: tuple[Server, Server], tmp_path: Path,
                                                 s3_server: S3Server, s3_bucket: str) -> None:
    a, b = two_servers
    browser = Client()
    assert browser.request("GET", a.url + "/csrf").status == 200  # the visitor cookie that owns the upload
    data = os.urandom(13 * MiB + 7)
    res = browser.request("POST", a.url + "/files/", headers={
        **TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta(filename="across.bin")})
    assert res.status == 201, res.body
    path = res.headers["location"]
    half = len(data) // 2  # 6.5 MiB: a whole part, and bytes in the staging object
    res = browser.request("PATCH", a.url + path, data[:half], {**TUS, "Upload-Offset": "0", "Content-Type": OCTETS})
    assert res.status == 204, res.body

    head = browser.request("HEAD", b.url + path, headers=TUS)
    assert head.status == 200 and head.headers["upload-offset"] == str(half)
    res = browser.request("PATCH", b.url + path, data[half:], {**TUS, "Upload-Offset": str(half),
                                                                "Content-Type": OCTETS})
    assert res.status == 204, res.body
    sha256 = hashlib.sha256(data).hexdigest()
    assert res.headers["sessup-file-sha256"] == sha256  # B had no running hash: read back from the bucket

    result = browser.request("GET", a.url + path).json()
    assert result["complete"] and result["size"] == len(data) and result["sha256"] == sha256
    download = browser.request("GET", a.url + result["url"])
    assert download.status == 200 and download.body == data
    assert hashlib.sha256(download.body).hexdigest() == sha256
    assert s3_server.read(s3_bucket, PREFIX + result["stored_name"]) == data
    # Left: the stored file and the upload's record; no multipart upload, nothing on either server's disk.
    assert s3_server.unfinished(s3_bucket) == []
    assert tus_keys(s3_server, s3_bucket) == [PREFIX + ".tus/" + path.rsplit("/", 1)[1] + ".info"]
    assert nothing_local(tmp_path) == []
    # A stranger sees nothing on either server; the owner terminates it through the second.
    assert Client().request("HEAD", a.url + path, headers=TUS).status == 404
    assert browser.request("DELETE", b.url + path, headers=TUS).status == 204
    assert s3_server.keys(s3_bucket) == []


def test_tus_js_client_resumes_on_another_server(two_servers: tuple[Server, Server], tmp_path: Path,
                                                 s3_server: S3Server, s3_bucket: str) -> None:
    node()
    a, b = two_servers
    data = os.urandom(12 * MiB + 5)
    source = tmp_path / "js.bin"
    source.write_bytes(data)
    browser = Client()
    assert browser.request("GET", a.url + "/csrf").status == 200
    # Interrupted once 6 MiB are acknowledged (1 MiB chunks: each PATCH stages, some fill a part).
    first = run_node(a.url + "/files/", str(source), browser.cookie, str(MiB), str(6 * MiB))
    url = str(first["url"])
    assert url.startswith(a.url + "/files/")
    moved = b.url + url[len(a.url):]
    offset = int(browser.request("HEAD", moved, headers=TUS).headers["upload-offset"])
    assert 6 * MiB <= offset < len(data)
    second = run_node(b.url + "/files/", str(source), browser.cookie, str(MiB), "0", moved)
    assert second["url"] == moved
    result = browser.request("GET", moved).json()
    assert result["size"] == len(data) and result["sha256"] == hashlib.sha256(data).hexdigest()
    assert browser.request("GET", a.url + result["url"]).body == data
    assert s3_server.unfinished(s3_bucket) == []
    assert [json.loads(s3_server.read(s3_bucket, k))["done"] for k in tus_keys(s3_server, s3_bucket)] == [True]
    assert nothing_local(tmp_path) == []
