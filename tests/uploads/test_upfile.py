"""POST /upFile through WebTest: the happy path, every limit, every malformed body.

After each rejection the storage must hold nothing at all: no stored file, no
temporary file, no metadata (and in a bucket, no unfinished multipart upload).
Tests that take ``backend`` run on the upload directory and on object storage.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import webtest
from webob import Request

from pyramid_sessup.uploads.storage import NAME_PATTERN

from .. import samples
from .conftest import BOUNDARY, MULTIPART, Backend, RaisingInput, body, leftovers, part, raw_call

ALL_BYTES = bytes(range(256))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def post_raw(client: webtest.TestApp, data: bytes, content_type: str = MULTIPART, status: Any = "*",
             **headers: str) -> Any:
    return client.request("/upFile", method="POST", body=data, content_type=content_type, status=status,
                          headers=headers)


def test_three_files_stored_byte_exact(client: webtest.TestApp, backend: Backend, upload_dir: Path) -> None:
    files = [("inputFile", "hello.txt", b"hello world\n"), ("inputFile", "empty.bin", b""),
             ("inputFile", "all.dat", ALL_BYTES)]
    res = client.post("/upFile", upload_files=files, params={"note": "caf\u00e9"},
                      headers={"Accept": "application/json"})
    assert res.content_type == "application/json"
    got = res.json["files"]
    assert [f["filename"] for f in got] == ["hello.txt", "empty.bin", "all.dat"]
    for f, (_, _, data) in zip(got, files):
        assert f["sha256"] == sha(data) and f["size"] == len(data) and f["field"] == "inputFile"
        assert NAME_PATTERN.fullmatch(f["stored_name"]) and f["url"] == "/uploads/" + f["stored_name"]
        assert backend.read(f["stored_name"]) == data
        assert client.get(f["url"]).body == data
    assert got[0]["content_type"] == "text/plain"
    assert res.json["fields"] == {"note": ["caf\u00e9"]}
    assert not any(str(upload_dir) in v for v in res.text.split('"'))  # never a server path
    assert backend.temps() == []

    text = client.post("/upFile", upload_files=files)
    assert text.content_type == "text/plain"
    first = text.text
    assert first.startswith("/uploads/") and first.endswith(".txt")
    assert client.get(first).body == b"hello world\n"
    assert str(upload_dir) not in text.text


def test_metadata_sidecar(client: webtest.TestApp, backend: Backend) -> None:
    res = client.post("/upFile", upload_files=[("inputFile", "r\u00e9sum\u00e9.pdf", b"%PDF-1.4")],
                      headers={"Accept": "application/json"})
    name = res.json["files"][0]["stored_name"]
    meta = backend.metadata(name)
    assert meta["filename"] == "r\u00e9sum\u00e9.pdf" and meta["sha256"] == sha(b"%PDF-1.4")
    assert meta["size"] == 8 and meta["content_type"] == "application/pdf"


def test_boundary_lookalikes_inside_data_round_trip(upapp: Callable[..., webtest.TestApp], backend: Backend) -> None:
    # Small reads so that delimiters and near-delimiters straddle chunk edges.
    client = upapp(**{"sessup.upload.chunk_size": "4096"})
    tricky = (b"\r\n--" + BOUNDARY.encode()[:-1] + b"X" + b"\r\n--" + b"\r" * 5000 + b"--" + BOUNDARY.encode()
              + b"\n\r\n-" + ALL_BYTES) * 40
    data = body(part("inputFile", tricky, filename="t.bin"), part("inputFile", b"\r\n", filename="crlf.bin"))
    res = post_raw(client, data, Accept="application/json")
    assert res.status_int == 200
    assert [f["sha256"] for f in res.json["files"]] == [sha(tricky), sha(b"\r\n")]


def test_chunked_body_without_content_length(client: webtest.TestApp, backend: Backend) -> None:
    # A server that de-chunks marks the end of input with wsgi.input_terminated.
    data = body(part("inputFile", b"abc", filename="a.txt"))
    req = Request.blank("/upFile", method="POST", headers={"Accept": "application/json"})
    req.environ.update({"wsgi.input": io.BytesIO(data), "CONTENT_TYPE": MULTIPART, "wsgi.input_terminated": True})
    req.environ.pop("CONTENT_LENGTH", None)
    res = req.get_response(client.app)
    assert res.status_int == 200 and res.json["files"][0]["sha256"] == sha(b"abc")


def test_no_content_length_and_no_terminated_input_is_empty(client: webtest.TestApp, backend: Backend) -> None:
    data = body(part("inputFile", b"abc", filename="a.txt"))
    res = raw_call(client.app, io.BytesIO(data), None)
    assert res.status_int == 400 and backend.leftovers() == []


def test_empty_file_input_is_not_a_file(client: webtest.TestApp, backend: Backend) -> None:
    # What a browser sends for <input type=file> with nothing chosen.
    data = body(part("inputFile", b"", filename="", content_type="application/octet-stream"))
    res = post_raw(client, data)
    assert res.status_int == 400 and "No file" in res.text
    assert backend.leftovers() == []


def test_filename_star_and_hostile_names(client: webtest.TestApp, backend: Backend, upload_dir: Path) -> None:
    cases = [
        ('form-data; name="inputFile"; filename="../../x.txt"', "x.txt"),
        ('form-data; name="inputFile"; filename="..\\\\..\\\\win.txt"', "win.txt"),
        ('form-data; name="inputFile"; filename="C:\\\\Users\\\\me\\\\doc.txt"', "doc.txt"),
        ('form-data; name="inputFile"; filename="/etc/passwd"', "passwd"),
        ('form-data; name="inputFile"; filename="nul\x00byte.txt"', "nulbyte.txt"),
        ('form-data; name="inputFile"; filename="cr%0D%0Alf.txt"', "crlf.txt"),
        ('form-data; name="inputFile"; filename="q%22uote.txt"', 'q"uote.txt'),
        ('form-data; name="inputFile"; filename="plain.txt"; filename*=UTF-8\'\'evil.html', "plain.txt"),
        ("form-data; name=\"inputFile\"; filename*=UTF-8''na%C3%AFve.txt", "na\u00efve.txt"),
        ('form-data; name="inputFile"; filename="\u65e5\u672c\u8a9e.txt"', "\u65e5\u672c\u8a9e.txt"),
        ('form-data; name="inputFile"; filename="abc\u202egnp.exe"', "abcgnp.exe"),
        ('form-data; name="inputFile"; filename="x.php"', "x.php"),
        ('form-data; name="inputFile"; filename=".."', ""),
    ]
    for disposition, expected in cases:
        data = body(part("", b"payload", disposition=disposition))
        res = post_raw(client, data, Accept="application/json")
        assert res.status_int == 200, (disposition, res.text)
        f = res.json["files"][0]
        assert f["filename"] == expected, disposition
        assert NAME_PATTERN.fullmatch(f["stored_name"])
        assert not f["stored_name"].endswith(".php") and not f["stored_name"].endswith(".exe")
    long = "a" * 1000 + ".txt"
    res = post_raw(client, body(part("inputFile", b"x", filename=long)), Accept="application/json")
    name = res.json["files"][0]["filename"]
    assert len(name.encode()) <= 255 and name.endswith(".txt")
    assert res.json["files"][0]["stored_name"].endswith(".txt")
    # Nothing was written anywhere but where stored files go.
    assert all(NAME_PATTERN.fullmatch(n) for n in backend.stored())
    assert backend.temps() == []
    assert set(os.listdir(upload_dir.parent)) <= {"uploads", "sessions"}


def _many(n: int, make: Callable[[int], bytes]) -> bytes:
    return body(*(make(i) for i in range(n)))


BAD_BODIES: list[tuple[str, Callable[[], tuple[bytes, str]], int, str]] = [
    ("missing boundary", lambda: (body(part("inputFile", b"x", filename="a.txt")), "multipart/form-data"), 400,
     "boundary"),
    ("empty boundary", lambda: (b"--\r\n", 'multipart/form-data; boundary=""'), 400, "boundary"),
    ("5000-character boundary", lambda: (body(part("inputFile", b"x", filename="a.txt"), boundary="b" * 5000),
                                         "multipart/form-data; boundary=" + "b" * 5000), 400, "boundary"),
    ("hostile content type", lambda: (b"x", "multipart/form-data;" + ' ;="' * 3000), 400, "boundary"),
    ("wrong boundary", lambda: (body(part("inputFile", b"x", filename="a.txt"), boundary="other"), MULTIPART), 400,
     "Malformed"),
    ("unterminated body", lambda: (body(part("inputFile", b"x" * 5000, filename="a.txt"))[:3000], MULTIPART), 400,
     "Malformed"),
    ("missing final boundary", lambda: (body(part("inputFile", b"data", filename="a.txt"), close=False), MULTIPART),
     400, "Malformed"),
    ("final boundary without --", lambda: (body(part("inputFile", b"data", filename="a.txt"), close=False)
                                            + b"--" + BOUNDARY.encode() + b"\r\n", MULTIPART), 400, "Malformed"),
    ("bare LF line breaks", lambda: (body(part("inputFile", b"data", filename="a.txt")).replace(b"\r\n", b"\n"),
                                     MULTIPART), 400, "Malformed"),
    ("junk after boundary", lambda: (b"--" + BOUNDARY.encode() + b"junk\r\n" + part("inputFile", b"x", "a.txt")
                                     + b"\r\n--" + BOUNDARY.encode() + b"--", MULTIPART), 400, "Malformed"),
    ("no Content-Disposition", lambda: (body(b"Content-Type: text/plain\r\n\r\nx"), MULTIPART), 400, "Malformed"),
    ("raw CR LF in filename", lambda: (body(part("", b"x", disposition='form-data; name="inputFile"; '
                                                 'filename="a\r\nb.txt"')), MULTIPART), 400, "Malformed"),
    ("header without colon", lambda: (body(b"Content-Disposition form-data\r\n\r\nx"), MULTIPART), 400,
     "Malformed"),
    ("invalid UTF-8 text field", lambda: (body(part("note", b"\xff\xfe"), part("inputFile", b"x", "a.txt")),
                                          MULTIPART), 400, "UTF-8"),
    ("file in an unexpected field", lambda: (body(part("other", b"x", filename="a.txt")), MULTIPART), 400,
     "Unexpected file field"),
    ("only text fields", lambda: (body(part("note", b"x")), MULTIPART), 400, "No file"),
    ("empty multipart", lambda: (b"--" + BOUNDARY.encode() + b"--\r\n", MULTIPART), 400, "No file"),
    ("empty body", lambda: (b"", MULTIPART), 400, "Malformed"),
    ("10,000 empty parts", lambda: (_many(10_000, lambda i: part(f"f{i}", b"")), MULTIPART), 413,
     "sessup.upload.max_fields"),
    ("10,000 empty files", lambda: (_many(10_000, lambda i: part("inputFile", b"", filename=f"{i}.txt")),
                                    MULTIPART), 413, "sessup.upload.max_files"),
    ("10,000 header-less parts", lambda: (_many(10_000, lambda i: b"\r\n"), MULTIPART), 400, "Malformed"),
    ("1 MiB part header", lambda: (body(part("inputFile", b"x", filename="a" * (1024 * 1024))), MULTIPART), 413,
     "sessup.upload.max_header_size"),
    ("100 part headers", lambda: (body(part("inputFile", b"x", filename="a.txt",
                                            extra=[f"X-H{i}: v" for i in range(100)])), MULTIPART), 413,
     "sessup.upload.max_header_size"),
    ("header block over the limit", lambda: (body(part("inputFile", b"x", filename="a.txt",
                                                       extra=[f"X-H{i}: " + "v" * 2000 for i in range(6)])),
                                             MULTIPART), 413, "sessup.upload.max_header_size"),
    ("oversized text field", lambda: (body(part("note", b"v" * (64 * 1024 + 1)), part("inputFile", b"x", "a.txt")),
                                      MULTIPART), 413, "sessup.upload.max_field_size"),
    ("21 files", lambda: (_many(21, lambda i: part("inputFile", b"x", filename=f"{i}.txt")), MULTIPART), 413,
     "sessup.upload.max_files"),
    ("multipart sent as text/plain", lambda: (body(part("inputFile", b"x", filename="a.txt")), "text/plain"), 415,
     "multipart/form-data"),
    ("urlencoded", lambda: (b"inputFile=x", "application/x-www-form-urlencoded"), 415, "multipart/form-data"),
    ("multipart/mixed", lambda: (body(part("inputFile", b"x", filename="a.txt")),
                                 f"multipart/mixed; boundary={BOUNDARY}"), 415, "multipart/form-data"),
    ("no content type at all", lambda: (b"", ""), 415, "multipart/form-data"),
]


@pytest.mark.parametrize("label, make, status, message", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies_are_refused_and_leave_nothing(client: webtest.TestApp, backend: Backend, label: str,
                                                  make: Callable[[], tuple[bytes, str]], status: int,
                                                  message: str) -> None:
    data, content_type = make()
    res = post_raw(client, data, content_type=content_type)
    assert res.status_int == status, res.text
    assert message in res.text
    assert res.content_type == "text/plain"
    assert backend.leftovers() == []
    as_json = post_raw(client, data, content_type=content_type, Accept="application/json")
    assert as_json.status_int == status and message in as_json.json["error"]
    assert backend.leftovers() == []


def test_file_size_limit_exact_and_one_over(upapp: Callable[..., webtest.TestApp], backend: Backend) -> None:
    client = upapp(**{"sessup.upload.max_file_size": "100000", "sessup.upload.chunk_size": "4096"})
    over = post_raw(client, body(part("inputFile", b"x" * 100_001, filename="big.bin")))
    assert over.status_int == 413 and "big.bin" in over.text and "sessup.upload.max_file_size" in over.text
    assert backend.leftovers() == []
    # A valid file before the oversized one is removed too.
    over = post_raw(client, body(part("inputFile", b"ok", filename="ok.bin"),
                                 part("inputFile", b"x" * 100_001, filename="big.bin")))
    assert over.status_int == 413 and backend.leftovers() == []
    exact = post_raw(client, body(part("inputFile", b"x" * 100_000, filename="big.bin")), Accept="application/json")
    assert exact.status_int == 200 and exact.json["files"][0]["size"] == 100_000
    assert len(backend.read(exact.json["files"][0]["stored_name"])) == 100_000


def test_total_size_limit(upapp: Callable[..., webtest.TestApp], backend: Backend) -> None:
    client = upapp(**{"sessup.upload.max_file_size": "1000", "sessup.upload.max_total_size": "2500"})
    res = post_raw(client, _many(3, lambda i: part("inputFile", b"x" * 1000, filename=f"{i}.bin")))
    assert res.status_int == 413 and "sessup.upload.max_total_size" in res.text and "2.bin" in res.text
    assert backend.leftovers() == []
    ok = post_raw(client, _many(2, lambda i: part("inputFile", b"x" * 1000, filename=f"{i}.bin")))
    assert ok.status_int == 200


def test_allow_lists(upapp: Callable[..., webtest.TestApp], backend: Backend) -> None:
    client = upapp(**{"sessup.upload.allowed_extensions": "png jpg txt"})
    res = post_raw(client, body(part("inputFile", b"<?php", filename="x.php")))
    assert res.status_int == 415 and "sessup.upload.allowed_extensions" in res.text and "x.php" in res.text
    res = post_raw(client, body(part("inputFile", samples.jpeg(), filename="x.php.jpg")), Accept="application/json")
    assert res.status_int == 200 and res.json["files"][0]["stored_name"].endswith(".jpg")
    res = post_raw(client, body(part("inputFile", b"x", filename="noext")))
    assert res.status_int == 415
    client = upapp(**{"sessup.upload.allowed_types": "image/*"})
    ok = post_raw(client, body(part("inputFile", samples.png(), filename="a.png", content_type="text/html")),
                  Accept="application/json")
    assert ok.status_int == 200 and ok.json["files"][0]["content_type"] == "image/png"
    before = backend.leftovers()
    bad = post_raw(client, body(part("inputFile", b"<html>", filename="a.html", content_type="image/png")))
    assert bad.status_int == 415 and "sessup.upload.allowed_types" in bad.text
    assert backend.leftovers() == before


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("kind", ["short read", "connection reset", "content-length smaller"])
def test_client_gone_mid_upload_leaves_nothing(client: webtest.TestApp, backend: Backend, kind: str) -> None:
    data = body(part("note", b"n"), part("inputFile", b"z" * 3_000_000, filename="a.bin"))
    before = fd_count()
    for _ in range(20):
        if kind == "short read":
            res = raw_call(client.app, io.BytesIO(data[: len(data) // 2]), len(data))
            assert "shorter than its Content-Length" in res.text
        elif kind == "connection reset":
            res = raw_call(client.app, RaisingInput(data[:2_000_000], ConnectionResetError(104, "reset")), len(data))
            assert "client disconnected" in res.text
        else:
            res = raw_call(client.app, io.BytesIO(data), len(data) - 100)
        assert res.status_int == 400
        assert backend.leftovers() == []
    assert fd_count() == before


def test_unexpected_error_while_writing_removes_temp(client: webtest.TestApp, backend: Backend,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from pyramid_sessup.uploads import pipeline

    def boom(f: Any, data: bytes) -> None:
        raise OSError(22, "Invalid argument")  # not a storage condition: a bug, so it propagates

    monkeypatch.setattr(pipeline, "_write_all", boom)
    before = fd_count()
    with pytest.raises(OSError):
        post_raw(client, body(part("inputFile", b"x", filename="a.txt")))
    assert backend.leftovers() == [] and fd_count() == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_upfile_are_405_with_allow(client: webtest.TestApp, method: str) -> None:
    res = client.request("/upFile", method=method, status="*", headers={"Accept": "application/json"})
    assert res.status_int == 405
    assert res.headers["Allow"] == "POST"
    assert res.json["code"] == "method_not_allowed"
    assert res.headers["X-Content-Type-Options"] == "nosniff"


def test_request_post_is_never_parsed(client: webtest.TestApp, backend: Backend) -> None:
    data = body(part("note", b"n"), part("inputFile", b"x", filename="a.txt"))
    req = Request.blank("/upFile", method="POST")
    # A one-pass stream: had anything read the body before the pipeline, the upload would fail.
    req.environ.update({"wsgi.input": RaisingInput(data), "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": MULTIPART})
    res = req.get_response(client.app)
    assert res.status_int == 200
    assert not any(key.startswith("webob._parsed_post") for key in req.environ)


def test_declared_length_over_the_limits_is_refused_before_the_body_is_read(
        upapp: Callable[..., webtest.TestApp], upload_dir: Path) -> None:
    """A Content-Length no accepted upload can reach is a 413 at once, the
    body unread; one byte under the bound is read as usual."""
    from pyramid_sessup.uploads.pipeline import UploadLimits

    client = upapp(**{"sessup.upload.max_total_size": "1000", "sessup.upload.max_file_size": "1000"})
    limits = UploadLimits.from_values(client.app.registry.sessup_settings)
    data = body(part("inputFile", b"x", filename="a.txt"))
    stream = RaisingInput(data, AssertionError("the body must not be read"))
    res = raw_call(client.app, stream, limits.max_body_size + 1, headers={"Accept": "application/json"})
    assert res.status_int == 413 and stream.data.tell() == 0
    assert str(limits.max_body_size) in res.json["error"]
    res = raw_call(client.app, io.BytesIO(data + b" " * (limits.max_body_size - len(data))), limits.max_body_size)
    assert res.status_int == 200, res.text
    assert len(leftovers(upload_dir)) == 2  # the stored file and its metadata
