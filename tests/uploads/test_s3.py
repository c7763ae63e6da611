"""Object storage (``sessup.upload.storage = s3``) against the S3 server process:
multipart uploads flushed part by part, nothing visible before commit, nothing
left (object or unfinished multipart upload) by a refusal or a dropped client,
metadata in the object, presigned downloads, the sweep, a service that is down.
"""
from __future__ import annotations

import hashlib
import io
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import webtest
from pyramid.exceptions import ConfigurationError
from pyramid.request import Request

from pyramid_sessup.settings import parse_settings
from pyramid_sessup.uploads.pipeline import receive_upload
from pyramid_sessup.uploads.s3 import S3Storage, make_client
from pyramid_sessup.uploads.storage import NAME_PATTERN, make_storage

from ..s3 import SECRET_KEY, S3Server
from .conftest import MULTIPART, Backend, RaisingInput, body, part, post_body, raw_call

MiB = 1024 * 1024


@pytest.fixture
def s3(s3_server: S3Server, s3_bucket: str, upload_dir: Path) -> Backend:
    return Backend("s3", upload_dir, s3_server, s3_bucket)


@pytest.fixture
def s3app(upapp: Callable[..., webtest.TestApp], s3: Backend) -> Callable[..., webtest.TestApp]:
    def make(**overrides: str) -> webtest.TestApp:
        limits = {"sessup.upload.max_file_size": str(64 * MiB), "sessup.upload.max_total_size": str(64 * MiB)}
        return upapp(**{**s3.settings, **limits, **overrides})

    return make


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 32  # 1 KiB
    return (block * (size // len(block) + 1))[:size]


class Spy:
    """Counts the add-on's own S3 calls (wrapping its client's methods; the
    server is the real process)."""

    def __init__(self, storage: S3Storage) -> None:
        self.part_sizes: list[int] = []
        self.calls: list[str] = []
        client = storage.client
        for name in ("upload_part", "put_object", "create_multipart_upload", "complete_multipart_upload",
                     "abort_multipart_upload", "copy_object", "upload_part_copy", "delete_object"):
            setattr(client, name, self._wrap(name, getattr(client, name)))

    def _wrap(self, name: str, method: Any) -> Any:
        def call(**params: Any) -> Any:
            self.calls.append(name)
            if name == "upload_part":
                self.part_sizes.append(len(params["Body"]))
            return method(**params)

        return call


def storage_of(client: webtest.TestApp) -> S3Storage:
    storage = client.app.registry.sessup_upload_storage
    assert isinstance(storage, S3Storage)
    return storage


def test_large_file_goes_up_in_parts_as_they_fill(s3app: Callable[..., webtest.TestApp], s3: Backend) -> None:
    client = s3app(**{"sessup.upload.chunk_size": str(64 * 1024)})
    spy = Spy(storage_of(client))
    data = payload(12 * MiB + 5)
    res = post_body(client, body(part("inputFile", data, filename="big.bin")), Accept="application/json")
    assert res.status_int == 200, res.text
    info = res.json["files"][0]
    assert info["size"] == len(data) and info["sha256"] == sha(data)
    assert s3.read(info["stored_name"]) == data
    # Parts of exactly 5 MiB (R2 needs equal parts) while the body streams, then the tail.
    assert spy.part_sizes == [5 * MiB, 5 * MiB, 2 * MiB + 5]
    assert spy.calls.count("complete_multipart_upload") == 1 and "put_object" not in spy.calls
    assert s3.temps() == [] and s3.stored() == [info["stored_name"]]


def test_small_file_is_one_request_and_metadata_lives_in_the_object(s3app: Callable[..., webtest.TestApp],
                                                                     s3: Backend) -> None:
    client = s3app()
    spy = Spy(storage_of(client))
    name = "\u65e5\u672c\u8a9e " * 20 + ".txt"  # long, non-ASCII: S3 metadata is ASCII and 2 KB at most
    res = post_body(client, body(part("inputFile", b"hello", filename=name)), Accept="application/json")
    assert res.status_int == 200, res.text
    info = res.json["files"][0]
    assert spy.calls == ["put_object", "copy_object", "delete_object"]
    head = s3.server.client().head_object(Bucket=s3.bucket, Key="uploads/" + info["stored_name"])
    assert s3.metadata(info["stored_name"]) == {"filename": info["filename"], "content_type": "text/plain", "size": 5,
                                         "sha256": sha(b"hello"), "field": "inputFile"}
    assert head["ContentType"] == "text/plain" and head["ContentDisposition"].startswith("inline;")
    assert all(ord(ch) < 128 for value in head["Metadata"].values() for ch in value)


def test_nothing_is_visible_before_commit(s3app: Callable[..., webtest.TestApp], s3: Backend,
                                          settings: dict[str, Any]) -> None:
    client = s3app()
    storage = storage_of(client)
    data = body(part("inputFile", payload(6 * MiB), filename="a.bin"), part("inputFile", b"x", filename="b.txt"))
    def request() -> Request:
        req = Request.blank("/f", method="POST", body=data, content_type=MULTIPART)
        req.registry = client.app.registry
        return req

    parsed = receive_upload(request(), csrf=False, storage=storage)
    # Received and hashed, but only temporary objects: no stored name answers.
    assert s3.stored() == [] and len(s3.temps()) == 2
    assert all(t.startswith("uploads/.tmp/") for t in s3.temps())
    parsed.commit()
    assert sorted(s3.stored()) == sorted(f.name for f in parsed.files) and s3.temps() == []
    parsed = receive_upload(request(), csrf=False, storage=storage)
    parsed.discard()  # refused by a later check: nothing of it stays
    assert len(s3.stored()) == 2 and s3.temps() == []


@pytest.mark.parametrize("where", ["first part", "tail", "second file"])
def test_limit_reached_mid_multipart_aborts_at_once(s3app: Callable[..., webtest.TestApp], s3: Backend,
                                                    where: str) -> None:
    client = s3app(**{"sessup.upload.max_file_size": str(11 * MiB), "sessup.upload.max_total_size": str(17 * MiB)})
    spy = Spy(storage_of(client))
    if where == "first part":
        data = body(part("inputFile", payload(11 * MiB + 1), filename="big.bin"))
    elif where == "tail":
        data = body(part("inputFile", payload(5 * MiB), filename="ok.bin"),
                    part("inputFile", payload(11 * MiB + 1), filename="big.bin"))  # over in its tail
    else:
        data = body(part("inputFile", payload(11 * MiB), filename="ok.bin"),
                    part("inputFile", payload(7 * MiB), filename="two.bin"))  # over the total after a part
    res = post_body(client, data)
    assert res.status_int == 413, res.text
    assert "upload_part" in spy.calls  # the refusal came after parts were sent
    # The refused file's multipart upload is aborted, never completed; a file
    # completed before it is deleted.
    assert spy.calls.count("abort_multipart_upload") == 1
    assert spy.calls.count("complete_multipart_upload") == (0 if where == "first part" else 1)
    assert s3.leftovers() == []  # no object, no unfinished multipart upload


@pytest.mark.parametrize("cut_mib", [3, 7, 11])
def test_client_gone_mid_multipart_leaves_nothing(s3app: Callable[..., webtest.TestApp], s3: Backend,
                                                  cut_mib: int) -> None:
    client = s3app()
    data = body(part("inputFile", payload(14 * MiB), filename="a.bin"))
    res = raw_call(client.app, RaisingInput(data[:cut_mib * MiB], ConnectionResetError(104, "reset")), len(data))
    assert res.status_int == 400 and "client disconnected" in res.text
    assert s3.leftovers() == []


def test_storage_down_is_503_and_leaves_nothing(upapp: Callable[..., webtest.TestApp], s3: Backend) -> None:
    from ..support import free_port

    dead = {**s3.settings, "sessup.upload.s3.endpoint_url": f"http://127.0.0.1:{free_port()}"}
    client = upapp(**dead)  # start-up still works (its sweep only warns)
    for data in (b"small", payload(6 * MiB)):
        res = post_body(client, body(part("inputFile", data, filename="a.bin")), Accept="application/json")
        assert res.status_int == 503 and res.json["code"] == "storage_unavailable", res.text
        assert res.headers["Retry-After"] and SECRET_KEY not in res.text
    res = client.get("/uploads/" + "A" * 32 + ".txt", status=503)
    assert res.headers["Retry-After"]


def test_presigned_redirect_download(s3app: Callable[..., webtest.TestApp], s3: Backend) -> None:
    client = s3app(**{"sessup.upload.s3.download": "redirect", "sessup.upload.s3.url_expiry": "30"})
    html = b"<!doctype html><script>alert(1)</script>"
    for filename, stored_type in (("page.html", "application/octet-stream"), ("a.png", "image/png"),
                                  ("\u65e5\u672c.pdf", "application/pdf")):
        url = post_body(client, body(part("inputFile", html, filename=filename))).text
        res = client.get(url, status=302)
        assert res.headers["Cache-Control"] == "no-store" and res.headers["X-Content-Type-Options"] == "nosniff"
        location = res.headers["Location"]
        assert location.startswith(s3.server.url + "/" + s3.bucket + "/uploads/")
        query = parse_qs(urlsplit(location).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["30"]
        assert SECRET_KEY not in location
        with urllib.request.urlopen(location) as answer:  # the bucket answers with the signed headers
            assert answer.read() == html
            assert answer.headers["Content-Type"] == stored_type
            assert answer.headers["Content-Disposition"].startswith("attachment;")
    client.get("/uploads/" + "A" * 32 + ".txt", status=404)
    client.get("/uploads/..%2Fx", status=404)


def test_copy_in_parts_above_the_copy_limit(s3: Backend, settings: dict[str, Any]) -> None:
    storage = make_storage(parse_settings({**settings, **s3.settings}))
    assert isinstance(storage, S3Storage)
    storage.copy_limit = 5 * MiB  # CopyObject stops at 5 GiB; exercise the UploadPartCopy path
    data = payload(11 * MiB)
    out, handle = storage.open_temp()
    with out:
        out.write(data)
    name = storage.finalize(handle, "bin", metadata={"filename": "x.bin", "size": len(data), "sha256": sha(data)})
    assert s3.read(name) == data and s3.metadata(name)["sha256"] == sha(data)
    head = s3.server.client().head_object(Bucket=s3.bucket, Key="uploads/" + name)
    assert head["ContentType"] == "application/octet-stream" and head["ContentDisposition"].startswith("attachment;")
    assert s3.stored() == [name] and s3.temps() == []


def test_sweep_aborts_stale_uploads_and_removes_stale_temps_only(s3: Backend, settings: dict[str, Any]) -> None:
    storage = make_storage(parse_settings({**settings, **s3.settings}))
    assert isinstance(storage, S3Storage)
    raw = s3.server.client()
    # A killed upload: an unfinished multipart upload with one part, and a temporary object.
    key = "uploads/.tmp/" + "K" * 32
    up = raw.create_multipart_upload(Bucket=s3.bucket, Key=key)
    raw.upload_part(Bucket=s3.bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x" * MiB)
    raw.put_object(Bucket=s3.bucket, Key="uploads/.tmp/" + "T" * 32, Body=b"kept form file")
    # Not ours: another prefix, a name that is not a temporary id, a stored file.
    raw.put_object(Bucket=s3.bucket, Key="other/.tmp/" + "T" * 32, Body=b"x")
    raw.put_object(Bucket=s3.bucket, Key="uploads/.tmp/readme.txt", Body=b"x")
    out, handle = storage.open_temp()
    out.write(b"stored")
    out.close()
    name = storage.finalize(handle)
    foreign = raw.create_multipart_upload(Bucket=s3.bucket, Key="other/" + "K" * 32)
    raw.upload_part(Bucket=s3.bucket, Key="other/" + "K" * 32, UploadId=foreign["UploadId"], PartNumber=1, Body=b"x")

    assert storage.sweep(3600) == 0  # all recent
    assert len(storage.temp_files()) == 2
    assert storage.sweep(0, now=time.time() + 5) == 2
    assert storage.temp_files() == [] and storage.unfinished_uploads() == []
    assert s3.server.unfinished(s3.bucket) == ["other/" + "K" * 32]
    assert s3.server.keys(s3.bucket) == sorted(["other/.tmp/" + "T" * 32, "uploads/.tmp/readme.txt",
                                                "uploads/" + name])


def test_configuration_errors() -> None:
    base = {"sessup.session.secret": "s", "sessup.upload.storage": "s3"}
    with pytest.raises(ConfigurationError, match="requires sessup.upload.s3.bucket"):
        parse_settings(base, environ={})
    for key, value in (("bucket", "a/b"), ("bucket", "x"), ("prefix", "/abs/"), ("prefix", "a/../b"),
                       ("endpoint_url", "ftp://x"), ("part_size", str(5 * MiB - 1)), ("download", "proxy"),
                       ("addressing_style", "dns")):
        with pytest.raises(ConfigurationError, match=f"sessup.upload.s3.{key}"):
            parse_settings({**base, "sessup.upload.s3.bucket": "bkt", f"sessup.upload.s3.{key}": value}, environ={})
    with pytest.raises(ConfigurationError, match="set both, or neither"):
        parse_settings({**base, "sessup.upload.s3.bucket": "bkt", "sessup.upload.s3.access_key_id": "AK"},
                       environ={})
    with pytest.raises(ConfigurationError, match="10,000 parts"):
        parse_settings({**base, "sessup.upload.s3.bucket": "bkt", "sessup.upload.max_file_size": str(100 * 1024 ** 3),
                        "sessup.upload.max_total_size": str(100 * 1024 ** 3)}, environ={})
    values = parse_settings({**base, "sessup.upload.s3.bucket": "bkt", "sessup.upload.s3.prefix": "a/b"}, environ={})
    assert values.upload.s3_prefix == "a/b/"


def test_credentials_never_appear_in_errors_or_reprs(s3: Backend, settings: dict[str, Any]) -> None:
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzSECRET"
    bad = {**settings, **s3.settings, "sessup.upload.s3.secret_access_key": secret + " with space"}
    with pytest.raises(ConfigurationError) as info:
        parse_settings(bad)
    assert "secret_access_key" in str(info.value) and secret not in str(info.value)
    values = parse_settings({**settings, **s3.settings, "sessup.upload.s3.secret_access_key": secret})
    storage = make_storage(values)
    for text in (repr(values), repr(values.upload), str(values), repr(storage), repr(make_client(values))):
        assert secret not in text and "sessup-test-key" not in text


def test_sweep_command_on_the_bucket(s3: Backend, tmp_path: Path, settings: dict[str, Any]) -> None:
    import subprocess
    import sys

    from ..support import write_ini

    raw = s3.server.client()
    key = "uploads/.tmp/" + "S" * 32
    up = raw.create_multipart_upload(Bucket=s3.bucket, Key=key)
    raw.upload_part(Bucket=s3.bucket, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=b"x")
    ini = write_ini(tmp_path, {**s3.settings, "sessup.upload.path": ""})
    sweep = str(Path(sys.executable).with_name("sessup-sweep"))
    done = subprocess.run([sweep, str(ini)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "removed 0 temporary" in done.stdout, done.stderr
    assert s3.server.unfinished(s3.bucket) == [key]
    time.sleep(1.1)
    done = subprocess.run([sweep, str(ini), "--max-age", "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "removed 1 temporary" in done.stdout, done.stderr
    assert s3.leftovers() == []
    dead = write_ini(tmp_path, {**s3.settings, "sessup.upload.s3.endpoint_url": "http://127.0.0.1:9"})
    done = subprocess.run([sweep, str(dead)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and SECRET_KEY not in done.stderr + done.stdout


def test_unknown_names_never_reach_the_bucket(s3app: Callable[..., webtest.TestApp], s3: Backend) -> None:
    client = s3app()
    spy = Spy(storage_of(client))
    head = storage_of(client).client.head_object
    seen: list[str] = []

    def recording(**params: Any) -> Any:
        seen.append(params["Key"])
        return head(**params)

    storage_of(client).client.head_object = recording
    for name in (".tmp/" + "A" * 32, "..%2F..%2Fother", "%2e%2e", "A" * 31, "A" * 32 + ".TXT", "uploads"):
        client.get("/uploads/" + name, status=404)
    assert seen == [] and spy.calls == []
    client.get("/uploads/" + "A" * 32, status=404)
    assert seen == ["uploads/" + "A" * 32]
    assert all(NAME_PATTERN.fullmatch(k.removeprefix("uploads/")) for k in seen)


def test_upload_of_empty_file(s3app: Callable[..., webtest.TestApp], s3: Backend) -> None:
    client = s3app()
    res = post_body(client, body(part("inputFile", b"", filename="e.txt")), Accept="application/json")
    assert res.status_int == 200 and s3.read(res.json["files"][0]["stored_name"]) == b""
    assert client.get(res.json["files"][0]["url"]).body == b""


def test_the_bytes_go_up_once(s3app: Callable[..., webtest.TestApp], s3: Backend) -> None:
    """The application sends each byte to the service once: the commit is a
    copy inside the service."""
    client = s3app()
    storage = storage_of(client)
    sent = [0]
    for name in ("upload_part", "put_object"):
        method = getattr(storage.client, name)

        def counting(method: Any = method, **params: Any) -> Any:
            sent[0] += len(params["Body"])
            return method(**params)

        setattr(storage.client, name, counting)
    data = payload(11 * MiB)
    res = post_body(client, body(part("inputFile", data, filename="a.bin"), part("inputFile", b"abc",
                                                                                   filename="b.bin")))
    assert res.status_int == 200 and sent[0] == len(data) + 3


def test_read_back_through_another_storage(s3app: Callable[..., webtest.TestApp], s3: Backend,
                                           settings: dict[str, Any]) -> None:
    """What one process stored, another reads with its metadata (nothing local)."""
    client = s3app()
    res = post_body(client, body(part("inputFile", b"shared", filename="s.txt")), Accept="application/json")
    info = res.json["files"][0]
    other = make_storage(parse_settings({**settings, **s3.settings, "sessup.upload.path": ""}))
    assert other is not storage_of(client)
    download = other.open_download(info["stored_name"])
    assert download is not None and download.size == 6 and download.metadata["sha256"] == info["sha256"]
    assert b"".join(download.iter_range()) == b"shared"
    assert b"".join(other.open_download(info["stored_name"]).iter_range(1, 3)) == b"ha"  # type: ignore[union-attr]


def test_request_body_is_read_in_chunks_not_buffered(s3app: Callable[..., webtest.TestApp], s3: Backend) -> None:
    """Parts go up as they fill, whatever the read size: equal parts, then the tail."""
    client = s3app(**{"sessup.upload.chunk_size": "4096"})
    spy = Spy(storage_of(client))
    data = payload(10 * MiB + 1)
    stream = io.BytesIO(body(part("inputFile", data, filename="a.bin")))
    res = raw_call(client.app, stream, len(stream.getvalue()), headers={"Accept": "application/json"})
    assert res.status_int == 200 and res.json["files"][0]["sha256"] == sha(data)
    assert spy.part_sizes == [5 * MiB, 5 * MiB, 1]
