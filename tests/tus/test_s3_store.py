"""tus with ``sessup.upload.storage = s3`` (the S3 server process): what the
bucket holds while an upload is received (a multipart upload of 5 MiB parts,
one staging object, the state object) and after it (the stored file, the
state record, nothing else); an upload continued through another application
on the same bucket; the lease; a refused completion and an interrupted one;
joining by copied parts; the sweep.  The tests that hold on both stores are
in test_protocol.py, test_defer_length.py and test_concatenation.py."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import webtest

from pyramid_sessup.tus import s3join
from pyramid_sessup.tus.s3store import S3TusStore

from ..s3 import S3Server
from .conftest import TUS, checksum, files_under, meta, patch_headers

MiB = 1024 * 1024
PREFIX = "uploads/"
TUS_PREFIX = PREFIX + ".tus/"
LIMIT = 32 * MiB


@pytest.fixture
def s3_settings(s3_server: S3Server, s3_bucket: str) -> dict[str, str]:
    """Uploads in the bucket, and no upload directory at all: tus needs none."""
    return {**s3_server.settings(s3_bucket, PREFIX), "sessup.upload.path": "",
            "sessup.upload.max_file_size": str(LIMIT), "sessup.upload.max_total_size": str(4 * LIMIT)}


@pytest.fixture
def client(make_app: Any, s3_settings: dict[str, str]) -> webtest.TestApp:
    return webtest.TestApp(make_app(**s3_settings), extra_environ={"HTTP_HOST": "example.com"})


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def create(app: webtest.TestApp, length: int, filename: str = "big.bin", **headers: str) -> str:
    return str(app.post("/files/", headers={**TUS, "Upload-Length": str(length),
                                            "Upload-Metadata": meta(filename=filename), **headers},
                        status=201).headers["Location"])


def state(server: S3Server, bucket: str, uid: str) -> dict[str, Any]:
    """The upload's state object, as stored."""
    return dict(json.loads(server.read(bucket, f"{TUS_PREFIX}{uid}.info")))


def write_state(server: S3Server, bucket: str, uid: str, data: dict[str, Any]) -> None:
    server.client().put_object(Bucket=bucket, Key=f"{TUS_PREFIX}{uid}.info", Body=json.dumps(data).encode())


def parts_of(server: S3Server, bucket: str, uid: str) -> list[int]:
    """Sizes of the parts of the upload's multipart upload(s) in the bucket."""
    s3 = server.client()
    sizes = []
    for up in s3.list_multipart_uploads(Bucket=bucket, Prefix=TUS_PREFIX + uid).get("Uploads", []):
        sizes += [p["Size"] for p in s3.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])["Parts"]]
    return sizes


def test_what_the_bucket_holds_while_receiving_and_after(client: webtest.TestApp, s3_server: S3Server,
                                                         s3_bucket: str, upload_dir: Path) -> None:
    data = os.urandom(12 * MiB + 5)
    loc = create(client, len(data), filename="r\u00e9sum\u00e9.pdf")
    uid = upload_id(loc)
    assert s3_server.keys(s3_bucket) == [f"{TUS_PREFIX}{uid}.info"]  # nothing else until bytes come
    offset = 0
    # (bytes sent, parts expected in the multipart upload, bytes expected in the staging object)
    for size, parts, staged in ((3 * MiB, [], 3 * MiB), (3 * MiB, [5 * MiB], MiB), (4 * MiB, [5 * MiB] * 2, 0),
                                (MiB + 1, [5 * MiB] * 2, MiB + 1)):
        client.patch(loc, data[offset:offset + size], headers=patch_headers(offset), status=204)
        offset += size
        assert client.head(loc, headers=TUS).headers["Upload-Offset"] == str(offset)
        assert parts_of(s3_server, s3_bucket, uid) == parts
        recorded = state(s3_server, s3_bucket, uid)
        assert recorded["offset"] == offset and [p[1] for p in recorded["store"]["parts"]] == parts
        staging = [k for k in s3_server.keys(s3_bucket) if ".part." in k]
        assert [len(s3_server.read(s3_bucket, k)) for k in staging] == ([staged] if staged else [])
        assert "lease" not in recorded  # released after each request
    client.patch(loc, data[offset:], headers=patch_headers(offset, **{"Upload-Checksum": checksum(
        "sha256", data[offset:])}), status=204)

    head = client.head(loc, headers=TUS, status=200)
    name = head.headers["Sessup-File-Path"]
    assert head.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    # The stored file and the upload's record; no multipart upload, no staging object.
    assert s3_server.keys(s3_bucket) == sorted([PREFIX + name, f"{TUS_PREFIX}{uid}.info"])
    assert s3_server.unfinished(s3_bucket) == []
    assert s3_server.read(s3_bucket, PREFIX + name) == data
    obj = s3_server.client().head_object(Bucket=s3_bucket, Key=PREFIX + name)
    assert obj["ContentType"] == "application/pdf"
    from pyramid_sessup.uploads.s3 import decode_metadata

    assert decode_metadata(obj["Metadata"]) == {"filename": "r\u00e9sum\u00e9.pdf", "content_type": "application/pdf",
                                                 "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                                 "field": "tus"}
    download = client.get(head.headers["Sessup-File-Url"])
    assert download.body == data and download.headers["Content-Type"] == "application/pdf"
    assert files_under(upload_dir) == []  # nothing on local disk, ever
    client.delete(loc, headers=TUS, status=204)
    assert s3_server.keys(s3_bucket) == [] and s3_server.unfinished(s3_bucket) == []


def test_checksum_mismatch_past_a_part_boundary_applies_nothing(client: webtest.TestApp, s3_server: S3Server,
                                                                s3_bucket: str) -> None:
    data = os.urandom(9 * MiB)
    loc = create(client, len(data))
    uid = upload_id(loc)
    client.patch(loc, data[:3 * MiB], headers=patch_headers(0), status=204)
    before = state(s3_server, s3_bucket, uid)
    # 4 MiB more: a whole part went up before the checksum could be checked.
    wrong = {"Upload-Checksum": checksum("sha1", b"not these bytes")}
    client.patch(loc, data[3 * MiB:7 * MiB], headers=patch_headers(3 * MiB, **wrong), status=460)
    assert client.head(loc, headers=TUS).headers["Upload-Offset"] == str(3 * MiB)
    assert state(s3_server, s3_bucket, uid) == before
    assert s3_server.unfinished(s3_bucket) == []  # the multipart upload begun for it was aborted
    # A body cut short with a checksum, likewise (and the upload id it began is aborted too).
    cookie = "; ".join(f"{c.name}={c.value}" for c in client.cookiejar)
    environ = {"REQUEST_METHOD": "PATCH", "HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_OFFSET": str(3 * MiB),
               "CONTENT_TYPE": "application/offset+octet-stream", "CONTENT_LENGTH": str(6 * MiB),
               "HTTP_UPLOAD_CHECKSUM": checksum("sha1", data[3 * MiB:]), "HTTP_COOKIE": cookie,
               "HTTP_HOST": "example.com", "wsgi.input": _Short(data[3 * MiB:8 * MiB])}
    assert webtest.TestRequest.blank(loc, environ).get_response(client.app).status_int == 400
    assert state(s3_server, s3_bucket, uid) == before and s3_server.unfinished(s3_bucket) == []
    client.patch(loc, data[3 * MiB:], headers=patch_headers(3 * MiB, **{"Upload-Checksum": checksum(
        "sha1", data[3 * MiB:])}), status=204)
    result = client.get(loc).json
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(result["url"]).body == data
    assert [k for k in s3_server.keys(s3_bucket) if k.startswith(TUS_PREFIX)] == [f"{TUS_PREFIX}{uid}.info"]


class _Short:
    """A body that ends (connection reset) after ``data``."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def read(self, size: int = -1) -> bytes:
        if not self.data:
            raise OSError("connection reset")
        block, self.data = self.data[:size], self.data[size:]
        return bytes(block)


def test_another_application_on_the_bucket_continues_the_upload(make_app: Any, s3_settings: dict[str, str],
                                                                 s3_server: S3Server, s3_bucket: str,
                                                                 tmp_path: Path) -> None:
    """Two applications share the bucket and nothing else (own directories,
    own processes' memory): B continues what A began, without A's running
    hash, and A serves the result."""
    a = webtest.TestApp(make_app(**s3_settings), extra_environ={"HTTP_HOST": "example.com"})
    b = webtest.TestApp(make_app(**s3_settings, **{"sessup.session.file.path": str(tmp_path / "b-sessions")}),
                        extra_environ={"HTTP_HOST": "example.com"})
    data = os.urandom(11 * MiB + 3)
    loc = create(a, len(data))
    a.patch(loc, data[:7 * MiB], headers=patch_headers(0), status=204)
    a.get("/csrf")
    for cookie in a.cookiejar:  # the same browser: the visitor cookie that owns the upload
        b.set_cookie(cookie.name, cookie.value)
    assert b.head(loc, headers=TUS).headers["Upload-Offset"] == str(7 * MiB)
    res = b.patch(loc, data[7 * MiB:], headers=patch_headers(7 * MiB), status=204)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()  # read back from the bucket
    assert a.get(res.headers["Sessup-File-Url"]).body == data
    # A stranger on either application still sees nothing.
    webtest.TestApp(b.app, extra_environ={"HTTP_HOST": "example.com"}).head(loc, headers=TUS, status=404)


def test_a_lease_held_elsewhere_is_409_until_released_or_ended(client: webtest.TestApp, make_app: Any,
                                                                s3_settings: dict[str, str], s3_server: S3Server,
                                                                s3_bucket: str) -> None:
    loc = create(client, 6)
    uid = upload_id(loc)
    other: S3TusStore = make_app(**s3_settings).registry.sessup_tus_store  # another machine
    with other.locked(uid):
        res = client.patch(loc, b"abc", headers=patch_headers(0), status=409)
        assert "Another request" in res.text
        client.delete(loc, headers=TUS, status=409)
        assert client.head(loc, headers=TUS).headers["Upload-Offset"] == "0"
    client.patch(loc, b"abc", headers=patch_headers(0), status=204)
    # A holder that died keeps the upload until its lease ends, then the next request takes over.
    recorded = state(s3_server, s3_bucket, uid)
    write_state(s3_server, s3_bucket, uid, {**recorded, "lease": {"token": "dead", "until": time.time() + 60}})
    client.patch(loc, b"def", headers=patch_headers(3), status=409)
    write_state(s3_server, s3_bucket, uid, {**recorded, "lease": {"token": "dead", "until": time.time() - 1}})
    res = client.patch(loc, b"def", headers=patch_headers(3), status=204)
    assert client.get(res.headers["Sessup-File-Url"]).body == b"abcdef"


def test_a_holder_that_lost_its_lease_records_nothing(client: webtest.TestApp, s3_server: S3Server,
                                                      s3_bucket: str) -> None:
    """A request whose lease another took over (it was too slow) must not
    record its chunk over the newcomer's state: its conditional write fails."""
    loc = create(client, 10)
    uid = upload_id(loc)
    store: S3TusStore = client.app.registry.sessup_tus_store
    with store.locked(uid) as info:
        # Meanwhile the lease ended and another request took the upload over.
        recorded = state(s3_server, s3_bucket, uid)
        write_state(s3_server, s3_bucket, uid, {**recorded, "lease": {"token": "newcomer", "until": time.time() + 60}})
        info.offset = 4
        with pytest.raises(Exception) as caught:
            store.save(info)
        assert getattr(caught.value, "status", None) == 409
    assert state(s3_server, s3_bucket, uid)["lease"]["token"] == "newcomer"  # not released by the loser
    assert state(s3_server, s3_bucket, uid)["offset"] == 0


def test_refused_completion_leaves_nothing(make_app: Any, s3_settings: dict[str, str], s3_server: S3Server,
                                           s3_bucket: str) -> None:
    app = webtest.TestApp(make_app(**s3_settings, **{"sessup.upload.allowed_extensions": "png"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    data = b"<!doctype html><script>alert(1)</script>" + os.urandom(6 * MiB)  # not a PNG
    loc = create(app, len(data), filename="photo.png")
    app.patch(loc, data[:5 * MiB + 7], headers=patch_headers(0), status=204)
    assert s3_server.unfinished(s3_bucket) != []
    res = app.patch(loc, data[5 * MiB + 7:], headers=patch_headers(5 * MiB + 7), status=415)
    assert "photo.png" in res.text
    app.head(loc, headers=TUS, status=404)
    assert s3_server.keys(s3_bucket) == [] and s3_server.unfinished(s3_bucket) == []


def test_an_interrupted_completion_is_reopened(client: webtest.TestApp, s3_server: S3Server, s3_bucket: str) -> None:
    """The process completing the multipart upload died before recording the
    result (the state says "assembling", the finished object is there): the
    next request reopens the upload at its recorded offset."""
    data = os.urandom(11 * MiB + 9)
    loc = create(client, len(data))
    uid = upload_id(loc)
    client.patch(loc, data[:10 * MiB + 1], headers=patch_headers(0), status=204)
    recorded = state(s3_server, s3_bucket, uid)
    # What the dead process did: its last part, the completion; not the commit.
    s3 = s3_server.client()
    key, upload = TUS_PREFIX + uid, recorded["store"]["upload"]
    tail = s3.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=3, Body=data[10 * MiB:])["ETag"]
    parts = [{"PartNumber": n, "ETag": etag} for n, _, etag in recorded["store"]["parts"]]
    s3.complete_multipart_upload(Bucket=s3_bucket, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": [*parts, {"PartNumber": 3, "ETag": tail}]})
    write_state(s3_server, s3_bucket, uid, {**recorded, "store": {**recorded["store"], "assembling": True}})

    res = client.patch(loc, data[10 * MiB + 1:], headers=patch_headers(10 * MiB + 1), status=204)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(res.headers["Sessup-File-Url"]).body == data
    assert s3_server.unfinished(s3_bucket) == []
    assert [k for k in s3_server.keys(s3_bucket) if k.startswith(TUS_PREFIX)] == [f"{TUS_PREFIX}{uid}.info"]


def test_an_interrupted_completion_whose_bytes_went_is_410(client: webtest.TestApp, s3_server: S3Server,
                                                           s3_bucket: str) -> None:
    """The dead process had completed the multipart upload and committed the
    object, but never recorded it: the bytes are gone; the upload says so and
    can still be terminated."""
    loc = create(client, 8 * MiB)
    uid = upload_id(loc)
    client.patch(loc, os.urandom(6 * MiB), headers=patch_headers(0), status=204)
    recorded = state(s3_server, s3_bucket, uid)
    s3 = s3_server.client()
    s3.abort_multipart_upload(Bucket=s3_bucket, Key=TUS_PREFIX + uid, UploadId=recorded["store"]["upload"])
    write_state(s3_server, s3_bucket, uid, {**recorded, "store": {**recorded["store"], "assembling": True}})
    res = client.patch(loc, os.urandom(2 * MiB), headers=patch_headers(6 * MiB), status=410)
    assert "start a new upload" in res.text
    client.delete(loc, headers=TUS, status=204)
    assert s3_server.keys(s3_bucket) == [] and s3_server.unfinished(s3_bucket) == []


def test_what_a_dead_request_left_goes_with_the_completion(client: webtest.TestApp, s3_server: S3Server,
                                                          s3_bucket: str) -> None:
    """A request killed mid-PATCH leaves what no state records: a multipart
    upload it began, a staging object it wrote.  The upload continues from its
    recorded offset, and once it is complete none of that is left."""
    data = os.urandom(7 * MiB)
    loc = create(client, len(data))
    uid = upload_id(loc)
    client.patch(loc, data[:MiB], headers=patch_headers(0), status=204)
    s3 = s3_server.client()
    dead = s3.create_multipart_upload(Bucket=s3_bucket, Key=TUS_PREFIX + uid)["UploadId"]
    s3.upload_part(Bucket=s3_bucket, Key=TUS_PREFIX + uid, UploadId=dead, PartNumber=1, Body=os.urandom(5 * MiB))
    s3.put_object(Bucket=s3_bucket, Key=f"{TUS_PREFIX}{uid}.part.{'d' * 12}", Body=b"half a chunk")
    assert client.head(loc, headers=TUS).headers["Upload-Offset"] == str(MiB)
    res = client.patch(loc, data[MiB:], headers=patch_headers(MiB), status=204)
    assert client.get(res.headers["Sessup-File-Url"]).body == data
    assert s3_server.unfinished(s3_bucket) == []
    assert [k for k in s3_server.keys(s3_bucket) if k.startswith(TUS_PREFIX)] == [f"{TUS_PREFIX}{uid}.info"]


def test_partials_of_a_part_or_more_are_joined_by_copied_parts(client: webtest.TestApp, s3_server: S3Server,
                                                                s3_bucket: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_streaming(*args: Any) -> Any:
        raise AssertionError("the partials went through the application")

    monkeypatch.setattr(s3join, "_join_by_streaming", no_streaming)
    pieces = [os.urandom(6 * MiB), os.urandom(5 * MiB + 1), os.urandom(17)]
    locs = []
    for piece in pieces:
        loc = client.post("/files/", headers={**TUS, "Upload-Concat": "partial", "Upload-Length": str(len(piece))},
                          status=201).headers["Location"]
        client.patch(loc, piece, headers=patch_headers(0), status=204)
        locs.append(loc)
    res = client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(locs),
                                          "Upload-Metadata": meta(filename="joined.bin")}, status=201)
    data = b"".join(pieces)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(res.headers["Sessup-File-Url"]).body == data
    assert s3_server.unfinished(s3_bucket) == []
    final_id = upload_id(res.headers["Location"])
    assert [k for k in s3_server.keys(s3_bucket) if k.startswith(TUS_PREFIX)] == [f"{TUS_PREFIX}{final_id}.info"]


def test_a_service_refusing_copied_parts_gets_the_join_streamed(client: webtest.TestApp, s3_server: S3Server,
                                                                 s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # Try copied parts below S3's 5 MiB minimum: the service refuses them (as R2
    # refuses unequal ones), and the join streams the partials instead.
    monkeypatch.setattr(s3join, "MIN_PART_SIZE", 1)
    caplog.set_level(logging.INFO, logger="pyramid_sessup.tus.s3join")
    pieces = [os.urandom(MiB + 5), os.urandom(3)]
    locs = []
    for piece in pieces:
        loc = client.post("/files/", headers={**TUS, "Upload-Concat": "partial", "Upload-Length": str(len(piece))},
                          status=201).headers["Location"]
        client.patch(loc, piece, headers=patch_headers(0), status=204)
        locs.append(loc)
    res = client.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(locs)}, status=201)
    assert "refused a join by copied parts (EntityTooSmall)" in caplog.text
    assert client.get(res.headers["Sessup-File-Url"]).body == b"".join(pieces)
    assert s3_server.unfinished(s3_bucket) == []


def test_sweep_removes_every_trace_of_an_expired_upload(client: webtest.TestApp, s3_server: S3Server,
                                                        s3_bucket: str) -> None:
    store: S3TusStore = client.app.registry.sessup_tus_store
    expired, alive = create(client, 9 * MiB), create(client, 9 * MiB)
    for loc in (expired, alive):
        client.patch(loc, os.urandom(6 * MiB), headers=patch_headers(0), status=204)  # a part and a staging object
    info = store.load(upload_id(expired))
    assert info is not None
    info.expires = time.time() - 1
    store.save(info)
    # What a crash during a creation leaves: a multipart upload and a staging object without state.
    s3 = s3_server.client()
    orphan = "Z" * 32
    s3.create_multipart_upload(Bucket=s3_bucket, Key=TUS_PREFIX + orphan)
    s3.put_object(Bucket=s3_bucket, Key=f"{TUS_PREFIX}{orphan}.part.{'y' * 12}", Body=b"x")
    assert store.sweep() == 1
    client.head(expired, headers=TUS, status=404)
    assert not [k for k in s3_server.keys(s3_bucket) + s3_server.unfinished(s3_bucket) if upload_id(expired) in k]
    assert any(orphan in k for k in s3_server.keys(s3_bucket))  # young: maybe still being created
    assert client.head(alive, headers=TUS).headers["Upload-Offset"] == str(6 * MiB)
    assert store.sweep(now=time.time() + 86400 + 60) == 1  # the other one's time is up too; the orphans go
    assert s3_server.keys(s3_bucket) == [] and s3_server.unfinished(s3_bucket) == []
