"""tus-js-client (the maintained JavaScript tus client, run by Node) against
real waitress: interrupted after some chunks, resumed by a new Upload with
the same URL; parallel uploads (concatenation: four partial uploads joined
by a final one), interrupted and resumed from the client's URL storage; a
stream of unknown length (creation-defer-length); all stored byte-exact.
Node and ``npm ci`` in tests/tus/js are required (scripts/test.sh does it);
missing, the test skips, under CI=true it fails."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ..support import free_port, running_server
from .servers import TUS, Client, node, run, tus_ini

pytestmark = [pytest.mark.server]

MiB = 1024 * 1024


def test_tus_js_client_interrupted_and_resumed(tmp_path: Path) -> None:
    node()
    data = os.urandom(12 * MiB + 5)
    source = tmp_path / "js.bin"
    source.write_bytes(data)
    port = free_port()
    with running_server(tus_ini(tmp_path / "srv", tmp_path / "uploads", tmp_path / "sessions", port), port) as server:
        browser = Client()
        # The visitor cookie (GET /csrf sets it) will own the upload; clients send it themselves.
        assert browser.request("GET", server.url + "/csrf").status == 200
        first = run(server.url + "/files/", str(source), browser.cookie, str(MiB), str(4 * MiB))
        url = str(first["url"])
        assert url.startswith(server.url + "/files/")
        offset = int(browser.request("HEAD", url, headers=TUS).headers["upload-offset"])
        assert 4 * MiB <= offset < len(data)

        second = run(server.url + "/files/", str(source), browser.cookie, str(MiB), "0", url)
        assert second["url"] == url
        result = browser.request("GET", url).json()
        assert result["filename"] == "from-tus-js-client.bin" and result["size"] == len(data)
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert browser.request("GET", server.url + result["url"]).body == data


def test_tus_js_client_parallel_uploads(tmp_path: Path) -> None:
    node()
    data = os.urandom(21 * MiB + 3)
    source = tmp_path / "parallel.bin"
    source.write_bytes(data)
    upload_dir = tmp_path / "uploads"
    port = free_port()
    with running_server(tus_ini(tmp_path / "srv", upload_dir, tmp_path / "sessions", port), port) as server:
        browser = Client()
        assert browser.request("GET", server.url + "/csrf").status == 200  # the visitor cookie owns the uploads
        storage = tmp_path / "tus-urls.json"
        args = (server.url + "/files/", str(source), browser.cookie, "4", str(MiB), str(storage))

        first = run(*args, str(6 * MiB), script="parallel.js")
        partials = [url for method, url, _, concat in first["requests"] if method == "POST" and concat == "partial"]
        assert len(partials) == 4 and not [r for r in first["requests"] if r[3].startswith("final")]
        stored = json.loads(storage.read_text())
        # The client remembers the partial uploads' URLs, which name uploads of this server.
        remembered = [u for entry in stored.values() for u in (entry.get("parallelUploadUrls") or [])]
        assert len(remembered) == 4
        offsets = []
        for url in remembered:
            head = browser.request("HEAD", url, headers=TUS)
            assert head.status == 200 and head.headers["upload-concat"] == "partial"
            offsets.append(int(head.headers["upload-offset"]))
        assert sum(offsets) >= 6 * MiB and sum(offsets) < len(data)

        second = run(*args, "0", script="parallel.js")
        assert second["resumed"] is True
        posts = [r for r in second["requests"] if r[0] == "POST"]
        assert [r[3] for r in posts] == ["final;" + " ".join(remembered)]  # no partial was created again
        patches = [(url, int(offset)) for method, url, offset, _ in second["requests"] if method == "PATCH"]
        assert {url for url, _ in patches} <= set(remembered)
        assert any(offset > 0 for _, offset in patches)  # continued, not restarted

        url = str(second["url"])
        head = browser.request("HEAD", url, headers=TUS)
        assert head.headers["upload-concat"] == "final;" + " ".join(remembered)
        assert head.headers["upload-offset"] == head.headers["upload-length"] == str(len(data))
        result = browser.request("GET", url).json()
        assert result["filename"] == "parallel.bin" and result["size"] == len(data)
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert browser.request("GET", server.url + result["url"]).body == data
        for partial in remembered:  # joined, then removed
            assert browser.request("HEAD", partial, headers=TUS).status == 404
        assert sorted(p.suffix for p in (upload_dir / ".tus").iterdir()) == [".json", ".lock"]
        assert not list((upload_dir / ".tmp").iterdir())


def test_tus_js_client_stream_of_unknown_length(tmp_path: Path) -> None:
    node()
    data = os.urandom(7 * MiB + 12345)
    source = tmp_path / "stream.bin"
    source.write_bytes(data)
    port = free_port()
    with running_server(tus_ini(tmp_path / "srv", tmp_path / "uploads", tmp_path / "sessions", port), port) as server:
        browser = Client()
        assert browser.request("GET", server.url + "/csrf").status == 200  # the visitor cookie owns the uploads
        out = run(server.url + "/files/", str(source), browser.cookie, str(MiB), script="stream.js")
        requests = out["requests"]
        assert requests[0][0] == "POST" and requests[0][3] == "1" and requests[0][4] == ""
        declared = [r for r in requests if r[4]]
        assert len(declared) == 1 and declared[0][0] == "PATCH" and declared[0][4] == str(len(data))
        assert declared[0] is requests[-1]  # the length came last, when the stream ended
        result = browser.request("GET", str(out["url"])).json()
        assert result["filename"] == "stream.bin" and result["size"] == len(data)
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert browser.request("GET", server.url + result["url"]).body == data
