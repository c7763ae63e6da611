"""The checks before a file is stored, with uploads in a bucket
(``sessup.upload.storage = s3``, the moto_server process): the content check
and clamd read the still-temporary object back from the bucket, on every
upload path, and a refused file leaves no object and no unfinished multipart
upload behind (a tus upload: no state, staging or finished object either)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from .. import samples
from ..s3 import S3Server
from .conftest import BODY_SIGNATURE, HASH_SIGNATURE, MALWARE, MARKER, PATHS, Clamd, refused_message, stored

MiB = 1024 * 1024
PREFIX = "uploads/"


def bucket_files(server: S3Server, bucket: str) -> dict[str, bytes]:
    """Stored objects (not temporary ones, nor the records of resumable uploads) and their bytes."""
    return {key: server.read(bucket, key) for key in server.keys(bucket)
            if not key.startswith((PREFIX + ".tmp/", PREFIX + ".tus/"))}


def assert_nothing_kept(server: S3Server, bucket: str, upload_dir: Path) -> None:
    assert server.keys(bucket) == [] and server.unfinished(bucket) == []
    assert stored(upload_dir) == []  # nothing went to the upload directory either


@pytest.mark.parametrize("path", PATHS)
def test_content_check_reads_the_temporary_object(visitor: Any, upload_dir: Path, s3_server: S3Server,
                                                  s3_bucket: str, path: str) -> None:
    client = visitor(**s3_server.settings(s3_bucket, PREFIX), **{"sessup.upload.allowed_extensions": "png txt"})
    res = client.upload(path, "photo.png", samples.HTML)
    assert res.status_int == 415, res.text
    message = refused_message(res)  # the form shows people a short message; scripts get the detail
    assert "photo.png" in message and ("text/html" in message or "not what its name says" in message)
    assert_nothing_kept(s3_server, s3_bucket, upload_dir)
    ok = client.upload(path, "photo.png", samples.png())
    assert ok.status_int in (200, 204), ok.text
    assert list(bucket_files(s3_server, s3_bucket).values()) == [samples.png()]
    assert s3_server.unfinished(s3_bucket) == []


@pytest.mark.parametrize("path", PATHS)
def test_clamd_scans_the_temporary_object(clamd: Clamd, visitor: Any, upload_dir: Path, s3_server: S3Server,
                                          s3_bucket: str, path: str) -> None:
    client = visitor(**s3_server.settings(s3_bucket, PREFIX), **{"sessup.upload.clamav": clamd.url})
    res = client.upload(path, "report.bin", MALWARE)
    assert res.status_int == 422, res.text
    message = refused_message(res)  # the form shows people a short message; scripts get the signature
    assert "report.bin" in message and (HASH_SIGNATURE in message or "refused by the server" in message)
    assert_nothing_kept(s3_server, s3_bucket, upload_dir)
    clean = b"an ordinary file\n" * 1000
    ok = client.upload(path, "clean.txt", clean)
    assert ok.status_int in (200, 204), ok.text
    assert list(bucket_files(s3_server, s3_bucket).values()) == [clean]


def test_clamd_sees_every_part_of_a_multipart_object(clamd: Clamd, visitor: Any, upload_dir: Path,
                                                     s3_server: S3Server, s3_bucket: str) -> None:
    """The signature sits in the second 5 MiB part: the whole object is streamed
    to clamd, not its first bytes."""
    client = visitor(**s3_server.settings(s3_bucket, PREFIX), **{"sessup.upload.clamav": clamd.url})
    infected = os.urandom(6 * MiB) + MARKER + os.urandom(1000)
    res = client.upfile([("a.txt", b"fine"), ("big.bin", infected)])
    assert res.status_int == 422 and "big.bin" in res.json["error"] and BODY_SIGNATURE in res.json["error"]
    assert_nothing_kept(s3_server, s3_bucket, upload_dir)
    clean = os.urandom(6 * MiB)
    assert client.upfile([("big.bin", clean)]).status_int == 200
    assert list(bucket_files(s3_server, s3_bucket).values()) == [clean]


def test_tus_completion_while_the_scanner_is_down_reopens_the_upload(visitor: Any, upload_dir: Path,
                                                                     s3_server: S3Server, s3_bucket: str) -> None:
    """The scanner is down when the last chunk arrives: the multipart upload
    was completed for the scan, so it is reopened (its part copied back from
    the finished object); the upload is at the offset before that chunk and
    sending it again completes it.  Nothing else is left behind."""
    own = Clamd()
    own.start()
    try:
        client = visitor(**s3_server.settings(s3_bucket, PREFIX), **{"sessup.upload.clamav": own.url})
        data = os.urandom(6 * MiB + 100)
        location = client.tus_create(len(data), "later.bin").headers["Location"].replace("http://example.com", "")
        headers = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream", "Host": "example.com"}
        first = 5 * MiB + 50  # a whole part and a staging object
        assert client.app.request(location, method="PATCH", body=data[:first], status="*",
                                  headers={**headers, "Upload-Offset": "0"}).status_int == 204
        own.stop()
        down = client.app.request(location, method="PATCH", body=data[first:], status="*",
                                  headers={**headers, "Upload-Offset": str(first)})
        assert down.status_int == 503 and down.headers["Retry-After"]
        assert bucket_files(s3_server, s3_bucket) == {}
        head = client.app.request(location, method="HEAD", headers=headers, status="*")
        assert head.status_int == 200 and head.headers["Upload-Offset"] == str(first)
        uid = location.rsplit("/", 1)[1]
        tus_keys = sorted(k.rsplit("/", 1)[1] for k in s3_server.keys(s3_bucket))
        assert [k.split(".", 1)[1].split(".")[0] for k in tus_keys] == ["info", "part"]  # no finished object
        assert s3_server.unfinished(s3_bucket) == [PREFIX + ".tus/" + uid]  # reopened
        own.start()
        again = client.app.request(location, method="PATCH", body=data[first:], status="*",
                                   headers={**headers, "Upload-Offset": str(first)})
        assert again.status_int == 204, again.text
        assert list(bucket_files(s3_server, s3_bucket).values()) == [data]
        assert s3_server.unfinished(s3_bucket) == []
        assert [k for k in s3_server.keys(s3_bucket) if k.startswith(PREFIX + ".tus/")] == [
            f"{PREFIX}.tus/{uid}.info"]
        assert stored(upload_dir) == []
    finally:
        own.remove()
