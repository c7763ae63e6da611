"""``sessup-sweep INI`` also removes expired unfinished resumable uploads,
in the upload directory and in a bucket."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import webtest

from pyramid_sessup.demo import main
from pyramid_sessup.tus.state import TusStore

from ..s3 import S3Server
from ..support import write_ini
from .conftest import TUS, patch_headers


def test_sweep_command_removes_expired_tus_uploads(tmp_path: Path) -> None:
    upload_dir = tmp_path / "uploads"
    overrides = {"sessup.upload.path": str(upload_dir), "sessup.upload.tus_expiry": "60"}
    ini = write_ini(tmp_path, overrides)
    from pyramid.paster import get_appsettings

    app = main({}, **get_appsettings(str(ini)))
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    expired = client.post("/files/", headers={**TUS, "Upload-Length": "5"}).headers["Location"]
    alive = client.post("/files/", headers={**TUS, "Upload-Length": "5"}).headers["Location"]
    client.patch(expired, b"ab", headers=patch_headers(0), status=204)
    store: TusStore = app.registry.sessup_tus_store
    info = store.load(expired.rstrip("/").rsplit("/", 1)[-1])
    info.expires = time.time() - 1
    store.save(info)

    sweep = str(Path(sys.executable).with_name("sessup-sweep"))
    out = subprocess.run([sweep, str(ini)], capture_output=True, text=True, check=True)
    assert "1 expired resumable upload(s)" in out.stdout
    client.head(expired, headers=TUS, status=404)
    client.head(alive, headers=TUS, status=200)


def test_sweep_command_removes_abandoned_partial_uploads(tmp_path: Path) -> None:
    """Partial uploads (concatenation), finished or not, never joined, go when they expire."""
    upload_dir = tmp_path / "uploads"
    ini = write_ini(tmp_path, {"sessup.upload.path": str(upload_dir), "sessup.upload.tus_expiry": "60"})
    from pyramid.paster import get_appsettings

    app = main({}, **get_appsettings(str(ini)))
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    partial = {**TUS, "Upload-Concat": "partial", "Upload-Length": "2"}
    finished = client.post("/files/", headers=partial).headers["Location"]
    client.patch(finished, b"ab", headers=patch_headers(0), status=204)
    unfinished = client.post("/files/", headers=partial).headers["Location"]
    alive = client.post("/files/", headers=partial).headers["Location"]
    store: TusStore = app.registry.sessup_tus_store
    for loc in (finished, unfinished):
        info = store.load(loc.rstrip("/").rsplit("/", 1)[-1])
        info.expires = time.time() - 1
        store.save(info)

    sweep = str(Path(sys.executable).with_name("sessup-sweep"))
    out = subprocess.run([sweep, str(ini)], capture_output=True, text=True, check=True)
    assert "2 expired resumable upload(s)" in out.stdout
    client.head(finished, headers=TUS, status=404)
    client.head(unfinished, headers=TUS, status=404)
    client.head(alive, headers=TUS, status=200)
    assert sorted(p.name.split(".")[1] for p in (upload_dir / ".tus").iterdir()) == ["json", "lock", "part"]


def test_sweep_command_aborts_expired_uploads_in_the_bucket(tmp_path: Path, s3_server: S3Server,
                                                            s3_bucket: str) -> None:
    """With uploads in a bucket: the expired upload's multipart upload is
    aborted, its staging and state objects removed; the other one stays,
    even when temporary files of any age are swept (``--max-age 0``): an
    unfinished resumable upload lives until its own expiry."""
    mib = 1024 * 1024
    ini = write_ini(tmp_path, {**s3_server.settings(s3_bucket), "sessup.upload.path": "",
                               "sessup.upload.tus_expiry": "60"})
    from pyramid.paster import get_appsettings

    app = main({}, **get_appsettings(str(ini)))
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    expired = client.post("/files/", headers={**TUS, "Upload-Length": str(8 * mib)}).headers["Location"]
    alive = client.post("/files/", headers={**TUS, "Upload-Length": str(8 * mib)}).headers["Location"]
    for loc in (expired, alive):
        client.patch(loc, os.urandom(6 * mib), headers=patch_headers(0), status=204)  # a part, a staging object
    store: TusStore = app.registry.sessup_tus_store
    info = store.load(expired.rstrip("/").rsplit("/", 1)[-1])
    info.expires = time.time() - 1
    store.save(info)
    assert s3_server.unfinished(s3_bucket) != []

    sweep = str(Path(sys.executable).with_name("sessup-sweep"))
    out = subprocess.run([sweep, str(ini), "--max-age", "0"], capture_output=True, text=True, check=True)
    assert "1 expired resumable upload(s)" in out.stdout
    client.head(expired, headers=TUS, status=404)
    assert client.head(alive, headers=TUS, status=200).headers["Upload-Offset"] == str(6 * mib)
    uid = alive.rsplit("/", 1)[-1]
    assert s3_server.unfinished(s3_bucket) == ["uploads/.tus/" + uid]
    assert sorted(k.split("/")[-1].split(".")[1] for k in s3_server.keys(s3_bucket)) == ["info", "part"]
    assert all(uid in k for k in s3_server.keys(s3_bucket))
    res = client.patch(alive, os.urandom(2 * mib), headers=patch_headers(6 * mib), status=204)
    assert res.headers["Sessup-File-Path"]
