"""tus 1.0.0 through WebTest: every status of OPTIONS, POST, HEAD, PATCH, DELETE."""
from __future__ import annotations

import hashlib
import io
import os
import time
from pathlib import Path
from typing import Any

import pytest
import webtest

from pyramid_sessup.tus.state import TusStore

from .conftest import OCTETS, TUS, TusBackend, checksum, files_under, meta, patch_headers, stored_files


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


# -- discovery and version ----------------------------------------------------------------------


def test_options_advertises_the_server(testapp: webtest.TestApp) -> None:
    for url in ("/files/", "/files", "/files/" + "A" * 32):
        res = testapp.options(url, status=204)
        assert res.headers["Tus-Version"] == "1.0.0"
        assert res.headers["Tus-Extension"] == ("creation,creation-with-upload,creation-defer-length,termination,"
                                                "expiration,checksum,concatenation")
        assert res.headers["Tus-Max-Size"] == str(10 * 1024 * 1024)
        assert res.headers["Tus-Checksum-Algorithm"] == "sha1,sha256"
        assert "Access-Control-Allow-Origin" not in res.headers  # never grants a cross-site preflight


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0", ""])
def test_unsupported_or_missing_version_is_412(testapp: webtest.TestApp, create: Any, version: str | None,
                                               upload_dir: Path) -> None:
    loc = create(5)
    headers = {} if version is None else {"Tus-Resumable": version}
    before = files_under(upload_dir)
    for method, url in (("POST", "/files/"), ("HEAD", loc), ("PATCH", loc), ("DELETE", loc)):
        res = testapp.request(url, method=method, headers={**headers, "Upload-Length": "5", "Upload-Offset": "0",
                                                            "Content-Type": OCTETS}, body=b"abc", status=412)
        assert res.headers["Tus-Version"] == "1.0.0"
    assert files_under(upload_dir) == before


def test_other_methods_are_405(testapp: webtest.TestApp, create: Any) -> None:
    res = testapp.put(create(5), b"x", headers=TUS, status=405)
    assert "PATCH" in res.headers["Allow"]
    testapp.get("/files/", headers=TUS, status=405)


# -- creation -------------------------------------------------------------------------------------


def test_creation(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    res = testapp.post("/files/", headers={**TUS, "Upload-Length": "100",
                                           "Upload-Metadata": meta(filename="report.pdf", filetype="application/pdf")},
                       status=201)
    assert res.headers["Location"].startswith("/files/")  # a path: never built from Host
    assert res.headers["Tus-Resumable"] == "1.0.0"
    assert res.headers["Upload-Offset"] == "0"
    expires = time.mktime(time.strptime(res.headers["Upload-Expires"], "%a, %d %b %Y %H:%M:%S GMT")) - time.timezone
    assert 86400 - 120 < expires - time.time() < 86400 + 120
    # The upload belongs to the visitor's CSRF nonce cookie; no session is stored.
    [cookie] = res.headers.getall("Set-Cookie")
    assert cookie.startswith("sessup_csrf=") and "HttpOnly" in cookie
    assert testapp.app.registry.sessup_store.count() == 0
    head = testapp.head(res.headers["Location"], headers=TUS, status=200)
    assert head.headers["Upload-Offset"] == "0" and head.headers["Upload-Length"] == "100"
    assert head.headers["Cache-Control"] == "no-store"
    assert head.headers["Upload-Metadata"] == meta(filename="report.pdf", filetype="application/pdf")
    assert tus_backend.stored() == [] and len(tus_backend.records()) == 1


@pytest.mark.parametrize("headers, status", [
    ({}, 400),                                                  # no Upload-Length
    ({"Upload-Length": "-1"}, 400),
    ({"Upload-Length": "ten"}, 400),
    ({"Upload-Length": "1e3"}, 400),
    ({"Upload-Defer-Length": "0"}, 400),                        # deferred length: only "1"
    ({"Upload-Defer-Length": "yes"}, 400),
    ({"Upload-Length": "5", "Upload-Defer-Length": "1"}, 400),  # both
    ({"Upload-Length": "5", "Upload-Concat": "parallel"}, 400),
    ({"Upload-Length": "5", "Upload-Concat": "final"}, 400),    # no URL list
    ({"Upload-Length": "5", "Upload-Concat": "final;"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": "filename not*base64"}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": "filename //8="}, 400),          # not UTF-8
    ({"Upload-Length": "5", "Upload-Metadata": "a YQ==,a YQ=="}, 400),          # repeated key
    ({"Upload-Length": "5", "Upload-Metadata": "bad key YQ=="}, 400),
    ({"Upload-Length": "5", "Upload-Metadata": "k " + "QUFB" * 2000}, 400),     # too long
    ({"Upload-Length": str(10 * 1024 * 1024 + 1)}, 413),        # one byte over max_file_size
])
def test_bad_creation(testapp: webtest.TestApp, upload_dir: Path, headers: dict[str, str], status: int) -> None:
    res = testapp.post("/files/", headers={**TUS, **headers}, status=status)
    assert res.text.strip()
    assert files_under(upload_dir) == []


def test_creation_at_exactly_max_file_size(testapp: webtest.TestApp) -> None:
    testapp.post("/files/", headers={**TUS, "Upload-Length": str(10 * 1024 * 1024)}, status=201)


def test_metadata_without_value_and_no_filename(testapp: webtest.TestApp, upload_dir: Path) -> None:
    res = testapp.post("/files/", headers={**TUS, "Upload-Length": "3", "Upload-Metadata": "flag,other "},
                       status=201)
    loc = res.headers["Location"]
    testapp.patch(loc, b"abc", headers=patch_headers(0), status=204)
    result = testapp.get(loc).json
    assert result["filename"] == "" and result["content_type"] == "application/octet-stream"
    assert "." not in result["stored_name"]


def test_filename_is_sanitised_and_type_derived(testapp: webtest.TestApp, create: Any,
                                                tus_backend: TusBackend) -> None:
    loc = create(2, filename="../../etc/\u202epasswd\x00.HTML")
    testapp.patch(loc, b"<b", headers=patch_headers(0), status=204)
    result = testapp.get(loc).json
    assert result["filename"] == "passwd.HTML"
    assert result["content_type"] == "text/html" and result["stored_name"].endswith(".html")
    assert tus_backend.stored() == [result["stored_name"]]
    download = testapp.get(result["url"])
    assert download.headers["Content-Disposition"].startswith("attachment")  # never inline HTML
    assert download.content_type == "application/octet-stream"


def test_executable_extension_is_dropped(testapp: webtest.TestApp, create: Any) -> None:
    loc = create(1, filename="shell.php")
    testapp.patch(loc, b"x", headers=patch_headers(0), status=204)
    assert "." not in testapp.get(loc).json["stored_name"]


@pytest.mark.parametrize("setting, value, filename", [
    ("sessup.upload.allowed_extensions", "png jpg", "notes.txt"),
    ("sessup.upload.allowed_extensions", "png jpg", "noext"),
    ("sessup.upload.allowed_types", "image/*", "notes.txt"),
])
def test_disallowed_type_is_415(make_app: Any, upload_dir: Path, setting: str, value: str, filename: str) -> None:
    app = webtest.TestApp(make_app(**{setting: value}), extra_environ={"HTTP_HOST": "example.com"})
    res = app.post("/files/", headers={**TUS, "Upload-Length": "3", "Upload-Metadata": meta(filename=filename)},
                   status=415)
    assert "allowed" in res.text
    app.post("/files/", headers={**TUS, "Upload-Length": "3", "Upload-Metadata": meta(filename="cat.png")},
             status=201)
    assert stored_files(upload_dir) == []


def test_empty_upload_is_complete_at_creation(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    res = testapp.post("/files/", headers={**TUS, "Upload-Length": "0", "Upload-Metadata": meta(filename="e.txt")},
                       status=201)
    assert res.headers["Upload-Offset"] == "0"
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(b"").hexdigest()
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b""
    assert tus_backend.stored() == [res.headers["Sessup-File-Path"]]


# -- creation-with-upload ---------------------------------------------------------------------------


def test_creation_with_upload(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    res = testapp.post("/files/", params=b"hello", headers={**TUS, "Upload-Length": "11", "Content-Type": OCTETS,
                                                            "Upload-Metadata": meta(filename="h.txt")}, status=201)
    assert res.headers["Upload-Offset"] == "5"
    loc = res.headers["Location"]
    res = testapp.patch(loc, b" world", headers=patch_headers(5), status=204)
    assert res.headers["Upload-Offset"] == "11"
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"hello world"


def test_creation_with_whole_upload_completes(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    data = bytes(range(256))
    res = testapp.post("/files/", params=data, status=201, headers={
        **TUS, "Upload-Length": "256", "Content-Type": OCTETS, "Upload-Checksum": checksum("sha256", data)})
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    assert testapp.get(res.headers["Sessup-File-Url"]).body == data


@pytest.mark.parametrize("headers, body, status", [
    ({"Content-Type": "text/plain"}, b"hello", 415),
    ({"Content-Type": OCTETS, "Upload-Checksum": checksum("sha1", b"other")}, b"hello", 460),
    ({"Content-Type": OCTETS, "Upload-Checksum": "md5 XUFAKrxLKna5cZ2REBfFkg=="}, b"hello", 400),
    ({"Content-Type": OCTETS}, b"hello world, too long", 413),
])
def test_bad_creation_with_upload_leaves_nothing(testapp: webtest.TestApp, tus_backend: TusBackend,
                                                  headers: dict[str, str], body: bytes, status: int) -> None:
    testapp.post("/files/", params=body, headers={**TUS, "Upload-Length": "11", **headers}, status=status)
    assert tus_backend.leftovers() == []


# -- PATCH --------------------------------------------------------------------------------------------


def test_patch_in_chunks_is_byte_exact(testapp: webtest.TestApp, create: Any, tus_backend: TusBackend) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    loc = create(len(data), filename="r.bin")
    step = 1024 * 1024
    for start in range(0, len(data), step):
        res = testapp.patch(loc, data[start:start + step], headers=patch_headers(start), status=204)
        assert res.headers["Upload-Offset"] == str(min(start + step, len(data)))
        assert res.headers["Tus-Resumable"] == "1.0.0"
    head = testapp.head(loc, headers=TUS)
    assert head.headers["Upload-Offset"] == str(len(data))
    assert "Upload-Expires" not in head.headers
    result = testapp.get(loc).json
    assert result == {"complete": True, "filename": "r.bin", "stored_name": head.headers["Sessup-File-Path"],
                      "url": head.headers["Sessup-File-Url"], "size": len(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "content_type": "application/octet-stream"}
    assert testapp.get(result["url"]).body == data
    # Stored like an /upFile result: metadata with it, nothing left in the temporary places.
    stored = tus_backend.metadata(result["stored_name"])
    assert stored["sha256"] == result["sha256"] and stored["filename"] == "r.bin" and stored["size"] == len(data)
    assert tus_backend.read(result["stored_name"]) == data
    assert tus_backend.stored() == [result["stored_name"]] and tus_backend.bytes_kept() == []


def test_patch_in_odd_pieces_across_the_part_boundary(make_app: Any, tus_backend: TusBackend) -> None:
    """Pieces of odd sizes: one ending two bytes short of 5 MiB (S3's smallest
    part), tiny ones crossing it, one worth more than a part: every offset
    HEAD reports is the bytes received, and the file is byte-exact."""
    mib = 1024 * 1024
    app = webtest.TestApp(make_app(**{"sessup.upload.max_file_size": str(20 * mib),
                                      "sessup.upload.max_total_size": str(20 * mib)}),
                          extra_environ={"HTTP_HOST": "example.com"})
    sizes = [1, 5 * mib - 2, 1, 2, 3 * mib + 7, 6 * mib + 5, 999_983, 13]
    data = os.urandom(sum(sizes))
    loc = app.post("/files/", headers={**TUS, "Upload-Length": str(len(data)),
                                       "Upload-Metadata": meta(filename="odd.bin")}, status=201).headers["Location"]
    offset = 0
    for size in sizes:
        res = app.patch(loc, data[offset:offset + size], headers=patch_headers(offset), status=204)
        offset += size
        assert res.headers["Upload-Offset"] == str(offset)
        if offset < len(data):
            assert app.head(loc, headers=TUS).headers["Upload-Offset"] == str(offset)
    result = app.get(loc).json
    assert result["complete"] and result["size"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert app.get(result["url"]).body == data and tus_backend.read(result["stored_name"]) == data
    assert tus_backend.bytes_kept() == [] and len(tus_backend.records()) == 1  # only the finished record stays


def test_sha256_recomputed_when_running_hash_is_lost(app: Any, testapp: webtest.TestApp, create: Any,
                                                     tus_backend: TusBackend) -> None:
    # Another process (or a restart) continuing the upload has no running hash.
    loc = create(6)
    testapp.patch(loc, b"abc", headers=patch_headers(0), status=204)
    store: TusStore = app.registry.sessup_tus_store
    store._hashes.clear()
    res = testapp.patch(loc, b"def", headers=patch_headers(3), status=204)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(b"abcdef").hexdigest()


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain"])
def test_patch_wrong_content_type_is_415(testapp: webtest.TestApp, create: Any, content_type: str | None) -> None:
    loc = create(5)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type:
        headers["Content-Type"] = content_type
    testapp.patch(loc, b"abc", headers=headers, status=415)
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "0"


@pytest.mark.parametrize("offset", ["3", "1", "10"])
def test_offset_mismatch_is_409(testapp: webtest.TestApp, create: Any, offset: str, tus_backend: TusBackend) -> None:
    loc = create(10)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    res = testapp.patch(loc, b"cd", headers={**patch_headers(0), "Upload-Offset": offset}, status=409)
    assert res.headers["Upload-Offset"] == "2"
    testapp.patch(loc, b"cdefghij", headers=patch_headers(2), status=204)
    assert testapp.get(testapp.get(loc).json["url"]).body == b"abcdefghij"


@pytest.mark.parametrize("offset", [None, "-1", "x", ""])
def test_missing_or_bad_offset_is_400(testapp: webtest.TestApp, create: Any, offset: str | None) -> None:
    loc = create(5)
    headers = {**TUS, "Content-Type": OCTETS}
    if offset is not None:
        headers["Upload-Offset"] = offset
    testapp.patch(loc, b"abc", headers=headers, status=400)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_accepted(testapp: webtest.TestApp, create: Any, algorithm: str, tus_backend: TusBackend) -> None:
    loc = create(6)
    testapp.patch(loc, b"abc", headers=patch_headers(0, **{"Upload-Checksum": checksum(algorithm, b"abc")}),
                  status=204)
    testapp.patch(loc, b"def", headers=patch_headers(3, **{"Upload-Checksum": checksum(algorithm, b"def")}),
                  status=204)
    assert testapp.get(testapp.get(loc).json["url"]).body == b"abcdef"


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_mismatch_is_460_and_not_applied(testapp: webtest.TestApp, create: Any, tus_backend: TusBackend,
                                                  algorithm: str) -> None:
    loc = create(6)
    testapp.patch(loc, b"abc", headers=patch_headers(0), status=204)
    testapp.patch(loc, b"XYZ", headers=patch_headers(3, **{"Upload-Checksum": checksum(algorithm, b"def")}),
                  status=460)
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "3"
    assert tus_backend.received(upload_id(loc)) == b"abc"
    res = testapp.patch(loc, b"def", headers=patch_headers(3, **{"Upload-Checksum": checksum(algorithm, b"def")}),
                        status=204)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(b"abcdef").hexdigest()


@pytest.mark.parametrize("value", ["md5 XUFAKrxLKna5cZ2REBfFkg==", "crc32 AAAAAA==", "sha1", "sha1 !!!",
                                   "sha256 " + checksum("sha1", b"x").split()[1]])
def test_unsupported_or_malformed_checksum_is_400(testapp: webtest.TestApp, create: Any, value: str) -> None:
    loc = create(3)
    testapp.patch(loc, b"abc", headers=patch_headers(0, **{"Upload-Checksum": value}), status=400)
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "0"


def test_bytes_past_upload_length_are_413_and_not_applied(testapp: webtest.TestApp, create: Any,
                                                          tus_backend: TusBackend) -> None:
    loc = create(5)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    testapp.patch(loc, b"cdefg", headers=patch_headers(2), status=413)
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "2"
    assert tus_backend.received(upload_id(loc)) == b"ab"
    testapp.patch(loc, b"cde", headers=patch_headers(2), status=204)


def test_chunked_body_past_upload_length_is_413(app: Any, testapp: webtest.TestApp, create: Any,
                                                tus_backend: TusBackend) -> None:
    # Transfer-Encoding: chunked (no Content-Length): counted while reading, cut back.
    loc = create(4)
    environ = {"REQUEST_METHOD": "PATCH", "PATH_INFO": loc, "HTTP_HOST": "example.com",
               "HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_OFFSET": "0", "CONTENT_TYPE": OCTETS,
               "wsgi.input": io.BytesIO(b"abcdefgh"), "wsgi.input_terminated": True,
               "HTTP_COOKIE": "; ".join(f"{c.name}={c.value}" for c in testapp.cookiejar)}
    res = webtest.TestRequest.blank(loc, environ).get_response(app)
    assert res.status_int == 413
    assert tus_backend.received(upload_id(loc)) == b""
    environ.update({"wsgi.input": io.BytesIO(b"abcd")})
    res = webtest.TestRequest.blank(loc, environ).get_response(app)
    assert res.status_int == 204 and res.headers["Upload-Offset"] == "4"


def test_max_chunk_size(make_app: Any) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.tus_max_chunk_size": "4"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    loc = app.post("/files/", headers={**TUS, "Upload-Length": "8"}).headers["Location"]
    app.patch(loc, b"abcde", headers=patch_headers(0), status=413)
    app.patch(loc, b"abcd", headers=patch_headers(0), status=204)


def test_patch_on_complete_upload(testapp: webtest.TestApp, create: Any, tus_backend: TusBackend) -> None:
    loc = create(2)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    testapp.patch(loc, b"", headers=patch_headers(2), status=204)    # nothing to add: fine
    testapp.patch(loc, b"c", headers=patch_headers(2), status=413)
    testapp.patch(loc, b"c", headers=patch_headers(1), status=409)


class ShortInput(io.RawIOBase):
    """A body that ends before its Content-Length: what a server that streams
    the body (not waitress, which buffers it) passes on when the client drops."""

    def __init__(self, data: bytes, fail: bool) -> None:
        self.data, self.fail = io.BytesIO(data), fail

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        block = self.data.read(size)
        if not block and self.fail:
            raise OSError("connection reset")
        return block


@pytest.mark.parametrize("fail", [True, False])
def test_body_cut_short_keeps_what_arrived(app: Any, testapp: webtest.TestApp, create: Any, fail: bool,
                                           tus_backend: TusBackend) -> None:
    loc = create(10)
    cookie = "; ".join(f"{c.name}={c.value}" for c in testapp.cookiejar)
    environ = {"REQUEST_METHOD": "PATCH", "HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_OFFSET": "0",
               "CONTENT_TYPE": OCTETS, "CONTENT_LENGTH": "10", "HTTP_COOKIE": cookie, "HTTP_HOST": "example.com",
               "wsgi.input": ShortInput(b"abcd", fail)}
    res = webtest.TestRequest.blank(loc, environ).get_response(app)
    assert res.status_int == 400 and res.headers["Upload-Offset"] == "4"
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "4"
    res = testapp.patch(loc, b"efghij", headers=patch_headers(4), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcdefghij"


def test_body_cut_short_with_checksum_is_discarded(app: Any, testapp: webtest.TestApp, create: Any,
                                                   tus_backend: TusBackend) -> None:
    loc = create(10)
    cookie = "; ".join(f"{c.name}={c.value}" for c in testapp.cookiejar)
    environ = {"REQUEST_METHOD": "PATCH", "HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_OFFSET": "0",
               "CONTENT_TYPE": OCTETS, "CONTENT_LENGTH": "10", "HTTP_COOKIE": cookie, "HTTP_HOST": "example.com",
               "HTTP_UPLOAD_CHECKSUM": checksum("sha1", b"abcdefghij"), "wsgi.input": ShortInput(b"abcd", True)}
    res = webtest.TestRequest.blank(loc, environ).get_response(app)
    assert res.status_int == 400
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "0"
    assert tus_backend.received(upload_id(loc)) == b""


def test_bytes_left_by_a_killed_writer_are_cut_off(testapp: webtest.TestApp, create: Any, upload_dir: Path) -> None:
    # A process killed mid-write leaves bytes past the committed offset.
    loc = create(6)
    testapp.patch(loc, b"abc", headers=patch_headers(0), status=204)
    with open(upload_dir / ".tus" / (upload_id(loc) + ".part"), "ab") as f:
        f.write(b"garbage")
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "3"
    res = testapp.patch(loc, b"def", headers=patch_headers(3), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcdef"


def test_concurrent_patch_gets_409(app: Any, testapp: webtest.TestApp, create: Any, tus_backend: TusBackend) -> None:
    loc = create(4)
    store: TusStore = app.registry.sessup_tus_store
    with store.locked(upload_id(loc)):  # another request is writing
        res = testapp.patch(loc, b"abcd", headers=patch_headers(0), status=409)
        assert "Another request" in res.text
        testapp.delete(loc, headers=TUS, status=409)
        assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "0"  # reading needs no lock
    testapp.patch(loc, b"abcd", headers=patch_headers(0), status=204)


def test_racing_patches_apply_one_chunk_at_a_time(app: Any, testapp: webtest.TestApp, create: Any,
                                                   tus_backend: TusBackend) -> None:
    """Four PATCHes at the same offset, at once, for 12 rounds: exactly one
    applies its chunk, the others get 409; the file is the winners' chunks in
    order.  Rounds that break this are counted (must be none)."""
    import threading

    chunk = 64 * 1024
    rounds = 12
    loc = create(chunk * rounds, filename="race.bin")
    cookie = "; ".join(f"{c.name}={c.value}" for c in testapp.cookiejar)
    expected = b""
    broken = 0
    for r in range(rounds):
        bodies = [bytes([r * 4 + i]) * chunk for i in range(4)]
        barrier = threading.Barrier(4)
        answers: dict[int, int] = {}

        def send(i: int) -> None:
            barrier.wait()
            request = webtest.TestRequest.blank(loc, {"REQUEST_METHOD": "PATCH", "HTTP_HOST": "example.com",
                                                      "HTTP_COOKIE": cookie}, headers=patch_headers(r * chunk))
            request.body = bodies[i]
            answers[i] = request.get_response(app).status_int

        threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        winners = [i for i, status in answers.items() if status == 204]
        if len(winners) != 1 or sorted(answers.values()) != [204, 409, 409, 409]:
            broken += 1
        if winners:
            expected += bodies[winners[0]]
        offset = testapp.head(loc, headers=TUS).headers["Upload-Offset"]
        if offset != str(len(expected)):
            broken += 1
            break
    assert broken == 0
    result = testapp.get(loc).json
    assert testapp.get(result["url"]).body == expected
    assert tus_backend.bytes_kept() == []


# -- ownership -----------------------------------------------------------------------------------------


def test_another_session_gets_404(app: Any, testapp: webtest.TestApp, create: Any, tus_backend: TusBackend) -> None:
    loc = create(4)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    other = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    other.get("/csrf")  # a visitor cookie of its own
    other.head(loc, headers=TUS, status=404)
    other.patch(loc, b"cd", headers=patch_headers(2), status=404)
    other.delete(loc, headers=TUS, status=404)
    other.get(loc, status=404)
    other.post("/files/", headers={**TUS, "Upload-Length": "1"}, status=201)  # its own token now
    other.head(loc, headers=TUS, status=404)
    anonymous = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    anonymous.head(loc, headers=TUS, status=404)
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "2"


@pytest.mark.parametrize("bad", ["x", "A" * 31, "A" * 33, "..%2F..%2Fetc", "A" * 31 + "."])
def test_malformed_or_unknown_id_is_404(testapp: webtest.TestApp, create: Any, bad: str) -> None:
    create(1)
    testapp.head("/files/" + bad, headers=TUS, status=404)
    testapp.patch("/files/" + bad, b"x", headers=patch_headers(0), status=404)
    testapp.head("/files/" + "A" * 32, headers=TUS, status=404)


def test_foreign_origin_over_https_is_403(testapp: webtest.TestApp) -> None:
    testapp.post("/files/", headers={**TUS, "Upload-Length": "1", "Origin": "https://evil.example"},
                 extra_environ={"wsgi.url_scheme": "https"}, status=403)
    testapp.post("/files/", headers={**TUS, "Upload-Length": "1", "Origin": "https://example.com"},
                 extra_environ={"wsgi.url_scheme": "https"}, status=201)


# -- termination -------------------------------------------------------------------------------------


def test_termination(testapp: webtest.TestApp, create: Any, tus_backend: TusBackend) -> None:
    loc = create(6 * 1024 * 1024)
    testapp.patch(loc, os.urandom(5 * 1024 * 1024 + 3), headers=patch_headers(0), status=204)  # a part, and more
    res = testapp.delete(loc, headers=TUS, status=204)
    assert res.headers["Tus-Resumable"] == "1.0.0"
    testapp.head(loc, headers=TUS, status=404)
    testapp.patch(loc, b"def", headers=patch_headers(5 * 1024 * 1024 + 3), status=404)
    testapp.delete(loc, headers=TUS, status=404)
    assert tus_backend.leftovers() == []


def test_termination_of_a_finished_upload_removes_the_file(testapp: webtest.TestApp, create: Any,
                                                           tus_backend: TusBackend) -> None:
    loc = create(3)
    url = testapp.patch(loc, b"abc", headers=patch_headers(0)).headers["Sessup-File-Url"]
    testapp.delete(loc, headers=TUS, status=204)
    testapp.get(url, status=404)
    assert tus_backend.leftovers() == []


# -- expiration -------------------------------------------------------------------------------------


def test_expired_upload_is_410_then_404(make_app: Any, tus_backend: TusBackend) -> None:
    app = make_app(**{"sessup.upload.tus_expiry": "1"})
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    loc = client.post("/files/", headers={**TUS, "Upload-Length": "5"}).headers["Location"]
    client.patch(loc, b"ab", headers=patch_headers(0), status=204)
    store: TusStore = app.registry.sessup_tus_store
    info = store.load(upload_id(loc))
    info.expires = time.time() - 1
    store.save(info)
    client.patch(loc, b"cde", headers=patch_headers(2), status=410)
    client.head(loc, headers=TUS, status=404)
    assert tus_backend.leftovers() == []


def test_sweep_removes_expired_unfinished_uploads(app: Any, testapp: webtest.TestApp, create: Any,
                                                  tus_backend: TusBackend) -> None:
    store: TusStore = app.registry.sessup_tus_store
    old, fresh, done = create(5), create(5), create(1)
    testapp.patch(old, b"ab", headers=patch_headers(0), status=204)
    url = testapp.patch(done, b"x", headers=patch_headers(0)).headers["Sessup-File-Url"]
    later = time.time() + 86400 + 10
    # "fresh" was continued recently: move its expiry past the sweep time.
    info = store.load(upload_id(fresh))
    info.expires = later + 100
    store.save(info)
    assert store.sweep(now=later) == 1
    testapp.head(old, headers=TUS, status=404)
    testapp.head(fresh, headers=TUS, status=200)
    testapp.head(done, headers=TUS, status=404)   # its record went...
    testapp.get(url, status=200)                   # ...its stored file stays
    assert not any(upload_id(old) in p for p in tus_backend.leftovers())
    assert not any(upload_id(done) in p for p in tus_backend.leftovers())


def test_sweep_at_start_up(make_app: Any, tus_backend: TusBackend) -> None:
    app = make_app()
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    loc = client.post("/files/", headers={**TUS, "Upload-Length": "5"}).headers["Location"]
    store: TusStore = app.registry.sessup_tus_store
    info = store.load(upload_id(loc))
    info.expires = time.time() - 1
    store.save(info)
    make_app()  # a restart
    assert tus_backend.tus_state() == []


def test_sweep_skips_an_upload_being_written(app: Any, create: Any, tus_backend: TusBackend) -> None:
    loc = create(5)
    store: TusStore = app.registry.sessup_tus_store
    with store.locked(upload_id(loc)):
        assert store.sweep(now=time.time() + 10 ** 6) == 0
    assert store.sweep(now=time.time() + 10 ** 6) == 1
    assert tus_backend.tus_state() == []


def test_sweep_removes_crash_leftovers(app: Any, upload_dir: Path) -> None:
    store: TusStore = app.registry.sessup_tus_store
    stray = Path(store.dir) / ("B" * 32 + ".part")
    stray.write_bytes(b"x")
    damaged = Path(store.dir) / ("C" * 32 + ".json")
    damaged.write_text("{not json")
    assert store.sweep() == 0 and stray.exists()          # young: maybe still being created
    store.sweep(now=time.time() + 86400 + 60)
    assert not stray.exists() and not damaged.exists()


def test_sweep_function(app: Any, create: Any, upload_dir: Path) -> None:
    from pyramid_sessup.tus.state import sweep

    create(5)
    assert sweep(str(upload_dir), 60, now=time.time() + 120) == 0  # expiry is recorded per upload
    assert sweep(str(upload_dir), 60, now=time.time() + 86400 + 120) == 1
    assert files_under(upload_dir, ".tus") == []


def test_creation_with_upload_cut_short_keeps_the_upload(app: Any, testapp: webtest.TestApp,
                                                         tus_backend: TusBackend) -> None:
    testapp.get("/csrf")  # the visitor cookie that will own the upload
    cookie = "; ".join(f"{c.name}={c.value}" for c in testapp.cookiejar)
    environ = {"REQUEST_METHOD": "POST", "HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_LENGTH": "10",
               "CONTENT_TYPE": OCTETS, "CONTENT_LENGTH": "10", "HTTP_COOKIE": cookie, "HTTP_HOST": "example.com",
               "wsgi.input": ShortInput(b"abcd", True)}
    res = webtest.TestRequest.blank("/files/", environ).get_response(app)
    assert res.status_int == 400 and res.headers["Upload-Offset"] == "4"
    loc = res.headers["Location"]
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "4"
    res = testapp.patch(loc, b"efghij", headers=patch_headers(4), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcdefghij"


def test_disk_full_is_507_and_nothing_applied(testapp: webtest.TestApp, create: Any, upload_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from pyramid_sessup.tus import local

    loc = create(8)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    real_write = os.write
    calls = []

    def full(fd: int, data: Any) -> int:  # the first block lands, then the disk is full
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:2]))

    monkeypatch.setattr(local.os, "write", full)
    testapp.patch(loc, b"cdefgh", headers=patch_headers(2), status=507)
    monkeypatch.undo()
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "2"
    assert (upload_dir / ".tus" / (upload_id(loc) + ".part")).read_bytes() == b"ab"
    res = testapp.patch(loc, b"cdefgh", headers=patch_headers(2), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcdefgh"


def test_disk_full_while_committing_keeps_the_upload(testapp: webtest.TestApp, create: Any, upload_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from pyramid_sessup.uploads.storage import UploadStorage

    loc = create(4)

    def full(self: Any, name: str, metadata: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(UploadStorage, "write_metadata", full)
    testapp.patch(loc, b"abcd", headers=patch_headers(0), status=507)
    monkeypatch.undo()
    assert stored_files(upload_dir) == [] and files_under(upload_dir, ".tmp") == []
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "0"
    res = testapp.patch(loc, b"abcd", headers=patch_headers(0), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcd"


def test_upload_whose_data_vanished_is_410(testapp: webtest.TestApp, create: Any, upload_dir: Path) -> None:
    loc = create(4)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    (upload_dir / ".tus" / (upload_id(loc) + ".part")).write_bytes(b"a")  # shorter than committed
    testapp.patch(loc, b"cd", headers=patch_headers(2), status=410)
    (upload_dir / ".tus" / (upload_id(loc) + ".part")).unlink()
    testapp.patch(loc, b"cd", headers=patch_headers(2), status=410)
    testapp.delete(loc, headers=TUS, status=204)
    assert files_under(upload_dir) == []


def test_demo_page(testapp: webtest.TestApp) -> None:
    page = testapp.get("/tus-demo?chunk=1048576")
    assert 'data-endpoint="/files/"' in page.text and 'data-chunk-size="1048576"' in page.text
    assert "sessup-tus.js" in page.text
    assert 'data-chunk-size="5242880"' in testapp.get("/tus-demo?chunk=<x>").text
    assert testapp.get("/static/sessup-tus.js").text.count("Tus-Resumable") >= 1


def test_host_app_gets_the_endpoint_but_no_demo_page(settings: dict[str, Any]) -> None:
    from pyramid.config import Configurator

    with Configurator(settings=settings) as config:
        config.include("pyramid_sessup.uploads")
        config.include("pyramid_sessup.tus")
    host = webtest.TestApp(config.make_wsgi_app(), extra_environ={"HTTP_HOST": "example.com"})
    host.options("/files/", status=204)
    loc = host.post("/files/", headers={**TUS, "Upload-Length": "1"}, status=201).headers["Location"]
    res = host.patch(loc, b"x", headers=patch_headers(0), status=204)
    assert host.get(res.headers["Sessup-File-Url"]).body == b"x"
    host.get("/tus-demo", status=404)


def test_no_upload_path_no_endpoint(settings: dict[str, Any]) -> None:
    from pyramid_sessup.demo import main

    app = webtest.TestApp(main({}, **{**settings, "sessup.upload.path": ""}))
    app.options("/files/", status=404)
    app.get("/tus-demo", status=404)
