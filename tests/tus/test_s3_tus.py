"""tus with ``sessup.upload.storage = s3``: the unfinished upload lives in the
upload directory's ``.tus``, the finished file goes into the bucket (its local
bytes removed), is served from there, and termination removes it from the bucket."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import webtest

from ..s3 import S3Server
from .conftest import TUS, checksum, files_under, meta, patch_headers


def test_finished_upload_goes_into_the_bucket(make_app: Any, upload_dir: Path, s3_server: S3Server,
                                              s3_bucket: str) -> None:
    app = webtest.TestApp(make_app(**s3_server.settings(s3_bucket)), extra_environ={"HTTP_HOST": "example.com"})
    data = os.urandom(6 * 1024 * 1024 + 3)  # past one 5 MiB part
    res = app.post("/files/", headers={**TUS, "Upload-Length": str(len(data)),
                                       "Upload-Metadata": meta(filename="r\u00e9sum\u00e9.pdf")}, status=201)
    location = res.headers["Location"]
    half = len(data) // 2
    app.patch(location, data[:half], headers=patch_headers(0), status=204)
    assert s3_server.keys(s3_bucket) == []  # unfinished: only in the upload directory
    assert any(name.startswith(".tus/") for name in files_under(upload_dir))
    app.patch(location, data[half:], headers=patch_headers(half, **{"Upload-Checksum": checksum(
        "sha256", data[half:])}), status=204)

    head = app.head(location, headers=TUS, status=200)
    name = head.headers["Sessup-File-Path"]
    assert head.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    assert s3_server.keys(s3_bucket) == ["uploads/" + name] and s3_server.unfinished(s3_bucket) == []
    assert s3_server.read(s3_bucket, "uploads/" + name) == data
    # Nothing of the file stays on local disk: only the small state record.
    assert [n for n in files_under(upload_dir) if not n.endswith((".json", ".lock"))] == []
    download = app.get(head.headers["Sessup-File-Url"])
    assert download.body == data and download.headers["Content-Type"] == "application/pdf"
    assert "r%C3%A9sum%C3%A9.pdf" in download.headers["Content-Disposition"]

    app.delete(location, headers=TUS, status=204)
    assert s3_server.keys(s3_bucket) == []
