"""creation-defer-length through WebTest: an upload created with
``Upload-Defer-Length: 1`` learns its length from one PATCH; the size limit
holds as the bytes arrive and when the length is declared."""
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

from .conftest import OCTETS, TUS, TusBackend, checksum, files_under, meta, patch_headers

LIMIT = 10 * 1024 * 1024  # sessup.upload.max_file_size of testing.ini


def deferred(testapp: webtest.TestApp, filename: str = "stream.bin", **headers: str) -> str:
    res = testapp.post("/files/", headers={**TUS, "Upload-Defer-Length": "1",
                                           "Upload-Metadata": meta(filename=filename), **headers}, status=201)
    assert "Upload-Length" not in res.headers and res.headers["Upload-Defer-Length"] == "1"
    return res.headers["Location"]


def state_of(testapp: webtest.TestApp, loc: str) -> dict[str, str]:
    return dict(testapp.head(loc, headers=TUS, status=200).headers)


def part_file(upload_dir: Path, loc: str) -> Path:
    return upload_dir / ".tus" / (loc.rsplit("/", 1)[1] + ".part")


def test_length_declared_with_the_last_chunk(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    loc = deferred(testapp)
    head = state_of(testapp, loc)
    assert head["Upload-Defer-Length"] == "1" and "Upload-Length" not in head and head["Upload-Offset"] == "0"
    assert testapp.get(loc).json["length"] is None
    step = 1024 * 1024
    for start in range(0, len(data), step):
        last = start + step >= len(data)
        extra = {"Upload-Length": str(len(data))} if last else {}
        res = testapp.patch(loc, data[start:start + step], headers=patch_headers(start, **extra), status=204)
        if not last:
            assert res.headers["Upload-Defer-Length"] == "1" and "Sessup-File-Url" not in res.headers
    assert res.headers["Upload-Length"] == res.headers["Upload-Offset"] == str(len(data))
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    assert "Upload-Defer-Length" not in res.headers
    assert testapp.get(res.headers["Sessup-File-Url"]).body == data
    result = testapp.get(loc).json
    assert result["complete"] and result["size"] == len(data) and result["filename"] == "stream.bin"
    assert tus_backend.bytes_kept() == [] and not [p for p in tus_backend.leftovers() if ".tmp" in p]


def test_length_declared_by_an_empty_patch_at_the_end(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    # What tus-js-client sends for a stream: the data, then Upload-Length once the source ends.
    loc = deferred(testapp)
    testapp.patch(loc, b"hello ", headers=patch_headers(0), status=204)
    testapp.patch(loc, b"world", headers=patch_headers(6), status=204)
    res = testapp.patch(loc, b"", headers=patch_headers(11, **{"Upload-Length": "11"}), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"hello world"


def test_length_declared_first(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    loc = deferred(testapp)
    res = testapp.patch(loc, b"abc", headers=patch_headers(0, **{"Upload-Length": "6"}), status=204)
    assert res.headers["Upload-Length"] == "6" and "Upload-Defer-Length" not in res.headers
    assert state_of(testapp, loc)["Upload-Length"] == "6"
    testapp.patch(loc, b"defg", headers=patch_headers(3), status=413)  # now held to the declared length
    res = testapp.patch(loc, b"def", headers=patch_headers(3), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcdef"


def test_empty_deferred_upload(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    loc = deferred(testapp, "empty.txt")
    res = testapp.patch(loc, b"", headers=patch_headers(0, **{"Upload-Length": "0"}), status=204)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(b"").hexdigest()


def test_deferred_creation_with_upload(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    res = testapp.post("/files/", params=b"first", status=201, headers={
        **TUS, "Upload-Defer-Length": "1", "Content-Type": OCTETS, "Upload-Metadata": meta(filename="c.txt")})
    assert res.headers["Upload-Offset"] == "5" and res.headers["Upload-Defer-Length"] == "1"
    loc = res.headers["Location"]
    res = testapp.patch(loc, b"+second", headers=patch_headers(5, **{"Upload-Length": "12"}), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"first+second"


# -- refusals --------------------------------------------------------------------------------------


def test_declared_length_over_the_limit_is_413_and_nothing_applied(testapp: webtest.TestApp,
                                                                   tus_backend: TusBackend) -> None:
    loc = deferred(testapp)
    testapp.patch(loc, b"ab", headers=patch_headers(0), status=204)
    res = testapp.patch(loc, b"cd", headers=patch_headers(2, **{"Upload-Length": str(LIMIT + 1)}), status=413)
    assert res.headers["Tus-Max-Size"] == str(LIMIT) and "max_file_size" in res.text
    head = state_of(testapp, loc)
    assert head["Upload-Offset"] == "2" and head["Upload-Defer-Length"] == "1"
    assert tus_backend.received(loc.rsplit("/", 1)[1]) == b"ab"
    # Exactly the limit is fine.
    testapp.patch(loc, b"cd", headers=patch_headers(2, **{"Upload-Length": str(LIMIT)}), status=204)


def test_bytes_past_the_limit_are_413_as_they_arrive(make_app: Any, tus_backend: TusBackend) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.max_file_size": "10", "sessup.upload.max_total_size": "10"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    loc = deferred(app)
    app.patch(loc, b"123456", headers=patch_headers(0), status=204)
    res = app.patch(loc, b"78901", headers=patch_headers(6), status=413)  # 11 bytes in all
    assert "sessup.upload.max_file_size" in res.text
    assert tus_backend.received(loc.rsplit("/", 1)[1]) == b"123456"
    assert state_of(app, loc)["Upload-Offset"] == "6"
    # A body without Content-Length is counted as it is read, and cut back.
    cookie = "; ".join(f"{c.name}={c.value}" for c in app.cookiejar)
    environ = {"REQUEST_METHOD": "PATCH", "HTTP_HOST": "example.com", "HTTP_TUS_RESUMABLE": "1.0.0",
               "HTTP_UPLOAD_OFFSET": "6", "CONTENT_TYPE": OCTETS, "HTTP_COOKIE": cookie,
               "wsgi.input": io.BytesIO(b"x" * 100), "wsgi.input_terminated": True}
    assert webtest.TestRequest.blank(loc, environ).get_response(app.app).status_int == 413
    assert tus_backend.received(loc.rsplit("/", 1)[1]) == b"123456"
    res = app.patch(loc, b"7890", headers=patch_headers(6, **{"Upload-Length": "10"}), status=204)
    assert app.get(res.headers["Sessup-File-Url"]).body == b"1234567890"


def test_deferred_creation_with_a_body_over_the_limit_leaves_nothing(make_app: Any, upload_dir: Path) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.max_file_size": "4", "sessup.upload.max_total_size": "4"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    app.post("/files/", params=b"12345", status=413,
             headers={**TUS, "Upload-Defer-Length": "1", "Content-Type": OCTETS})
    assert files_under(upload_dir) == []


def test_length_declared_twice_is_400(testapp: webtest.TestApp) -> None:
    loc = deferred(testapp)
    testapp.patch(loc, b"ab", headers=patch_headers(0, **{"Upload-Length": "5"}), status=204)
    for value in ("5", "6"):  # the same value again, or another one
        res = testapp.patch(loc, b"c", headers=patch_headers(2, **{"Upload-Length": value}), status=400)
        assert "already set" in res.text
    assert state_of(testapp, loc)["Upload-Offset"] == "2"
    # An upload created with its length cannot declare one either.
    plain = testapp.post("/files/", headers={**TUS, "Upload-Length": "3"}).headers["Location"]
    testapp.patch(plain, b"abc", headers=patch_headers(0, **{"Upload-Length": "3"}), status=400)
    testapp.patch(plain, b"abc", headers=patch_headers(0), status=204)


def test_declared_length_below_the_bytes_received_is_400(testapp: webtest.TestApp) -> None:
    loc = deferred(testapp)
    testapp.patch(loc, b"abcdef", headers=patch_headers(0), status=204)
    testapp.patch(loc, b"", headers=patch_headers(6, **{"Upload-Length": "5"}), status=400)
    assert state_of(testapp, loc)["Upload-Defer-Length"] == "1"


@pytest.mark.parametrize("value", ["-1", "x", "", "1e3", "9" * 30])
def test_malformed_declared_length_is_400(testapp: webtest.TestApp, value: str) -> None:
    loc = deferred(testapp)
    testapp.patch(loc, b"ab", headers=patch_headers(0, **{"Upload-Length": value}), status=400)
    assert state_of(testapp, loc)["Upload-Offset"] == "0"


def test_refused_chunk_does_not_record_the_length(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    loc = deferred(testapp)
    # The body passes the length it declares: 413, neither the bytes nor the length are kept.
    testapp.patch(loc, b"abcdef", headers=patch_headers(0, **{"Upload-Length": "4"}), status=413)
    # A checksum mismatch: 460, likewise.
    testapp.patch(loc, b"abcd", headers=patch_headers(0, **{"Upload-Length": "4",
                                                            "Upload-Checksum": checksum("sha1", b"nope")}),
                  status=460)
    head = state_of(testapp, loc)
    assert head["Upload-Offset"] == "0" and head["Upload-Defer-Length"] == "1"
    assert tus_backend.received(loc.rsplit("/", 1)[1]) == b""
    res = testapp.patch(loc, b"abcd", headers=patch_headers(0, **{"Upload-Length": "4",
                                                                  "Upload-Checksum": checksum("sha1", b"abcd")}),
                        status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcd"


def test_max_chunk_size_holds_for_deferred_uploads(make_app: Any) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.tus_max_chunk_size": "4"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    loc = deferred(app)
    app.patch(loc, b"abcde", headers=patch_headers(0), status=413)
    app.patch(loc, b"abcd", headers=patch_headers(0), status=204)


def test_disallowed_type_is_refused_at_creation(make_app: Any, upload_dir: Path) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.allowed_extensions": "png"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    app.post("/files/", headers={**TUS, "Upload-Defer-Length": "1", "Upload-Metadata": meta(filename="x.exe")},
             status=415)
    assert files_under(upload_dir) == []


# -- expiration ------------------------------------------------------------------------------------


def test_deferred_upload_whose_length_never_comes_expires(app: Any, testapp: webtest.TestApp,
                                                          tus_backend: TusBackend) -> None:
    loc = deferred(testapp)
    testapp.patch(loc, b"abc", headers=patch_headers(0), status=204)
    store: TusStore = app.registry.sessup_tus_store
    assert store.sweep(now=time.time() + 60) == 0
    assert store.sweep(now=time.time() + 86400 + 60) == 1
    testapp.head(loc, headers=TUS, status=404)
    assert tus_backend.leftovers() == []

    loc = deferred(testapp)
    info = store.load(loc.rsplit("/", 1)[1])
    info.expires = time.time() - 1
    store.save(info)
    testapp.patch(loc, b"abc", headers=patch_headers(0, **{"Upload-Length": "3"}), status=410)
    testapp.head(loc, headers=TUS, status=404)
    assert tus_backend.leftovers() == []
