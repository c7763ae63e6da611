"""concatenation through WebTest: partial uploads joined by a final upload,
byte-exact and committed like any other, and every refusal (someone else's
partials, unfinished ones, duplicates, too many, size and checksum
mismatches) leaving the partials as they were and nothing else behind."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import webtest

from pyramid_sessup.tus import local
from pyramid_sessup.tus.state import TusStore

from ..samples import png
from .conftest import OCTETS, TUS, TusBackend, checksum, files_under, meta, patch_headers, stored_files

LIMIT = 10 * 1024 * 1024  # sessup.upload.max_file_size of testing.ini


def upload_id(location: str) -> str:
    return location.rsplit("/", 1)[1]


def partial(app: webtest.TestApp, data: bytes | None, length: int | None = None, **headers: str) -> str:
    """A partial upload; ``data`` (if not None) is sent in one PATCH."""
    size = len(data) if data is not None else length
    res = app.post("/files/", headers={**TUS, "Upload-Concat": "partial", "Upload-Length": str(size), **headers},
                   status=201)
    assert res.headers["Upload-Concat"] == "partial"
    loc = res.headers["Location"]
    if data:
        res = app.patch(loc, data, headers=patch_headers(0), status=204)
        assert "Sessup-File-Url" not in res.headers  # a partial is never a stored file
    return loc


def final(app: webtest.TestApp, locations: list[str], status: int = 201, **headers: str) -> Any:
    return app.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(locations),
                                        "Upload-Metadata": meta(filename="joined.bin"), **headers}, status=status)


def tus_state(upload_dir: Path) -> list[str]:
    return files_under(upload_dir, ".tus")


def assert_untouched(app: webtest.TestApp, where: Path | TusBackend, partials: dict[str, bytes],
                     before: list[str]) -> None:
    """After a refusal: the partials as they were, nothing stored, nothing added
    (``where``: the upload directory, or the tus store under test)."""
    backend = where if isinstance(where, TusBackend) else TusBackend("local", where)
    for loc, data in partials.items():
        head = app.head(loc, headers=TUS, status=200)
        assert head.headers["Upload-Offset"] == str(len(data))
        assert backend.received(upload_id(loc)) == data
    assert backend.stored() == [] and not [p for p in backend.leftovers() if ".tmp" in p]
    assert backend.tus_state() == before


# -- joining ------------------------------------------------------------------------------------------


def test_partials_joined_in_order(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    pieces = [os.urandom(1024 * 1024 + 3), os.urandom(17), b"", os.urandom(300_000)]
    locs = [partial(testapp, piece) for piece in pieces]
    # Absolute URLs and paths alike, as tus-js-client and others send them.
    names = [loc if i % 2 else "http://example.com" + loc for i, loc in enumerate(locs)]
    res = final(testapp, names)
    data = b"".join(pieces)
    assert res.headers["Location"].startswith("/files/")  # a path: never built from Host
    assert res.headers["Upload-Offset"] == res.headers["Upload-Length"] == str(len(data))
    assert res.headers["Upload-Concat"] == "final;" + " ".join(names)
    assert res.headers["Sessup-File-Sha256"] == hashlib.sha256(data).hexdigest()
    assert testapp.get(res.headers["Sessup-File-Url"]).body == data

    head = testapp.head(res.headers["Location"], headers=TUS, status=200)
    assert head.headers["Upload-Concat"] == "final;" + " ".join(names)
    assert head.headers["Upload-Offset"] == head.headers["Upload-Length"] == str(len(data))
    assert head.headers["Upload-Metadata"] == meta(filename="joined.bin")
    result = testapp.get(res.headers["Location"]).json
    assert result["complete"] and result["filename"] == "joined.bin" and result["size"] == len(data)
    stored = tus_backend.metadata(result["stored_name"])
    assert stored["sha256"] == result["sha256"] and stored["size"] == len(data)

    # The partials are gone once joined; only the final upload's record is left.
    for loc in locs:
        testapp.head(loc, headers=TUS, status=404)
    final_id = upload_id(res.headers["Location"])
    assert tus_backend.records() == [tus_backend.records()[0]] and final_id in tus_backend.records()[0]
    assert tus_backend.bytes_kept() == []
    assert tus_backend.stored() == [result["stored_name"]] and not [p for p in tus_backend.leftovers() if ".tmp" in p]


def test_partial_uploads_in_chunks_with_checksums(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    a, b = os.urandom(5000), os.urandom(3000)
    locs = [partial(testapp, None, len(a)), partial(testapp, None, len(b))]
    for loc, data in ((locs[1], b), (locs[0], a)):  # any order
        for start in range(0, len(data), 1024):
            chunk = data[start:start + 1024]
            testapp.patch(loc, chunk, headers=patch_headers(start, **{"Upload-Checksum": checksum("sha256", chunk)}),
                          status=204)
    res = final(testapp, locs)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == a + b


def test_partials_created_with_data_deferred_or_empty(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    with_body = testapp.post("/files/", params=b"abc", status=201, headers={
        **TUS, "Upload-Concat": "partial", "Upload-Length": "3", "Content-Type": OCTETS}).headers["Location"]
    deferred = testapp.post("/files/", headers={**TUS, "Upload-Concat": "partial", "Upload-Defer-Length": "1"},
                            status=201)
    assert deferred.headers["Upload-Defer-Length"] == "1"
    empty = partial(testapp, b"")
    final(testapp, [with_body, deferred.headers["Location"]], status=400)  # its length is not known yet
    testapp.patch(deferred.headers["Location"], b"def", headers=patch_headers(0, **{"Upload-Length": "3"}),
                  status=204)
    res = final(testapp, [with_body, empty, deferred.headers["Location"]])
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcdef"


def test_final_checks_the_whole_file_checksum(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    pieces = {partial(testapp, b"hello "): b"hello ", partial(testapp, b"world"): b"world"}
    locs = list(pieces)
    before = tus_backend.tus_state()
    for algorithm in ("sha1", "sha256"):
        res = final(testapp, locs, status=460, **{"Upload-Checksum": checksum(algorithm, b"hello there")})
        assert "checksum" in res.text
        assert_untouched(testapp, tus_backend, pieces, before)
    final(testapp, locs, status=400, **{"Upload-Checksum": "md5 XUFAKrxLKna5cZ2REBfFkg=="})
    res = final(testapp, locs, **{"Upload-Checksum": checksum("sha1", b"hello world")})
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"hello world"


def test_final_upload_length_must_match(testapp: webtest.TestApp, upload_dir: Path) -> None:
    pieces = {partial(testapp, b"abc"): b"abc", partial(testapp, b"de"): b"de"}
    before = tus_state(upload_dir)
    for wrong in ("4", "6", "0"):
        res = final(testapp, list(pieces), status=400, **{"Upload-Length": wrong})
        assert "does not match" in res.text
        assert_untouched(testapp, upload_dir, pieces, before)
    final(testapp, list(pieces), status=400, **{"Upload-Length": "x"})
    res = final(testapp, list(pieces), **{"Upload-Length": "5"})
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcde"


def test_partials_skip_the_type_checks_the_final_upload_gets(make_app: Any, upload_dir: Path) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.allowed_extensions": "png"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    image = png(64, 64)
    locs = [partial(app, image[:40]), partial(app, image[40:])]  # no file name: fine for a partial
    app.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(locs),
                                 "Upload-Metadata": meta(filename="evil.exe")}, status=415)
    res = app.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(locs),
                                       "Upload-Metadata": meta(filename="cat.png")}, status=201)
    assert res.headers["Sessup-File-Path"].endswith(".png")
    assert app.get(res.headers["Sessup-File-Url"]).body == image
    # The joined file gets the content check a plain upload gets: text named .png is refused.
    fake = [partial(app, b"\x89PNG"), partial(app, b"rest")]
    app.post("/files/", headers={**TUS, "Upload-Concat": "final;" + " ".join(fake),
                                 "Upload-Metadata": meta(filename="cat.png")}, status=415)


# -- refusals -------------------------------------------------------------------------------------------


def test_partials_of_another_session_are_refused(app: Any, testapp: webtest.TestApp,
                                                 tus_backend: TusBackend) -> None:
    mine = {partial(testapp, b"mine"): b"mine"}
    other = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    theirs = {partial(other, b"theirs"): b"theirs"}
    before = tus_backend.tus_state()
    # Someone else's partial answers exactly like one that does not exist.
    res_theirs = final(testapp, [*mine, *theirs], status=400)
    res_unknown = final(testapp, [*mine, "/files/" + "A" * 32], status=400)
    assert res_theirs.text.replace(upload_id(next(iter(theirs))), "ID") == res_unknown.text.replace("A" * 32, "ID")
    assert_untouched(testapp, tus_backend, mine, before)
    assert_untouched(other, tus_backend, theirs, before)
    # A client with no session at all.
    stranger = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    final(stranger, list(theirs), status=400)
    assert_untouched(other, tus_backend, theirs, before)
    # Each owner can still join their own.
    assert testapp.get(final(testapp, list(mine)).headers["Sessup-File-Url"]).body == b"mine"
    assert other.get(final(other, list(theirs)).headers["Sessup-File-Url"]).body == b"theirs"


def test_busy_partial_of_another_session_answers_like_an_unknown_one(app: Any, testapp: webtest.TestApp) -> None:
    import fcntl

    mine = partial(testapp, b"mine")
    other = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    theirs = partial(other, b"theirs")
    store: TusStore = app.registry.sessup_tus_store
    fd = os.open(os.path.join(store.dir, upload_id(theirs) + ".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # its owner is writing to it right now
        res = final(testapp, [mine, theirs], status=400)  # not 409: nothing tells it exists
        assert "no partial upload" in res.text
    finally:
        os.close(fd)


def test_unfinished_partial_is_refused(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    done = partial(testapp, b"done")
    half = partial(testapp, None, 10)
    testapp.patch(half, b"half", headers=patch_headers(0), status=204)
    before = tus_backend.tus_state()
    res = final(testapp, [done, half], status=400)
    assert "unfinished" in res.text and "4 of 10" in res.text
    assert_untouched(testapp, tus_backend, {done: b"done", half: b"half"}, before)
    testapp.patch(half, b"-rest!", headers=patch_headers(4), status=204)
    assert testapp.get(final(testapp, [done, half]).headers["Sessup-File-Url"]).body == b"donehalf-rest!"


def test_duplicate_partials_are_refused(testapp: webtest.TestApp, upload_dir: Path) -> None:
    a, b = partial(testapp, b"a"), partial(testapp, b"b")
    before = tus_state(upload_dir)
    for names in ([a, b, a], [a, a], [a, "http://example.com" + a]):
        res = final(testapp, names, status=400)
        assert "twice" in res.text
    assert_untouched(testapp, upload_dir, {a: b"a", b: b"b"}, before)


def test_too_many_partials_are_refused(make_app: Any, upload_dir: Path) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.tus_max_parts": "3"}), extra_environ={"HTTP_HOST": "example.com"})
    pieces = {partial(app, bytes([65 + i])): bytes([65 + i]) for i in range(4)}
    before = tus_state(upload_dir)
    res = final(app, list(pieces), status=400)
    assert "tus_max_parts" in res.text
    assert_untouched(app, upload_dir, pieces, before)
    # A header far too long is refused before anything is parsed or looked up.
    final(app, ["/files/" + "A" * 32] * 1000, status=400)
    assert app.get(final(app, list(pieces)[:3]).headers["Sessup-File-Url"]).body == b"ABC"


def test_joined_size_over_the_limit_is_413(make_app: Any, upload_dir: Path) -> None:
    app = webtest.TestApp(make_app(**{"sessup.upload.max_file_size": "10", "sessup.upload.max_total_size": "10"}),
                          extra_environ={"HTTP_HOST": "example.com"})
    pieces = {partial(app, b"123456"): b"123456", partial(app, b"78901"): b"78901"}
    before = tus_state(upload_dir)
    res = final(app, list(pieces), status=413)
    assert res.headers["Tus-Max-Size"] == "10" and "max_file_size" in res.text
    assert_untouched(app, upload_dir, pieces, before)
    # Each partial is held to the limit too.
    app.post("/files/", headers={**TUS, "Upload-Concat": "partial", "Upload-Length": "11"}, status=413)


def test_plain_and_final_uploads_cannot_be_joined(testapp: webtest.TestApp, create: Any) -> None:
    plain = create(3)
    testapp.patch(plain, b"abc", headers=patch_headers(0), status=204)
    part = partial(testapp, b"x")
    res = final(testapp, [part, plain], status=400)
    assert "Upload-Concat: partial" in res.text
    joined = final(testapp, [part]).headers["Location"]
    other = partial(testapp, b"y")
    final(testapp, [other, joined], status=400)  # a final upload is not a partial one
    final(testapp, [part], status=400)  # already joined: gone
    testapp.head(other, headers=TUS, status=200)


@pytest.mark.parametrize("value", [
    "final;/elsewhere/" + "A" * 32,            # not this endpoint
    "final;/files/../files/" + "A" * 32,
    "final;/files/short",
    "final;/files/" + "A" * 32 + "/more",
    "final;http://[::1",                       # unparsable URL
    "final;" + "x" * 3000,                     # one URL too long
    "final; ",
    "final,/files/" + "A" * 32,
    "partial;final",
    "FINAL;/files/" + "A" * 32,
    "final;\u00e9\u00e9",
])
def test_malformed_concat_header_is_400(testapp: webtest.TestApp, upload_dir: Path, value: str) -> None:
    keep = partial(testapp, b"k")
    before = tus_state(upload_dir)
    res = testapp.post("/files/", headers={**TUS, "Upload-Concat": value.encode("utf-8").decode("latin-1")},
                       status=400)
    assert res.text.strip()
    assert_untouched(testapp, upload_dir, {keep: b"k"}, before)


def test_final_takes_no_body_and_no_deferred_length(testapp: webtest.TestApp, upload_dir: Path) -> None:
    a = partial(testapp, b"a")
    before = tus_state(upload_dir)
    testapp.post("/files/", params=b"body", status=400, headers={
        **TUS, "Upload-Concat": "final;" + a, "Content-Type": OCTETS})
    testapp.post("/files/", status=400, headers={**TUS, "Upload-Concat": "final;" + a, "Upload-Defer-Length": "1"})
    assert_untouched(testapp, upload_dir, {a: b"a"}, before)


def test_final_upload_cannot_be_patched(testapp: webtest.TestApp) -> None:
    a = partial(testapp, b"a")
    loc = final(testapp, [a]).headers["Location"]
    res = testapp.patch(loc, b"b", headers=patch_headers(1), status=403)
    assert "final upload" in res.text
    testapp.patch(loc, b"", headers=patch_headers(1), status=403)
    assert testapp.head(loc, headers=TUS).headers["Upload-Offset"] == "1"


def test_busy_partial_is_409(app: Any, testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    a, b = partial(testapp, b"a"), partial(testapp, b"b")
    store: TusStore = app.registry.sessup_tus_store
    with store.locked(upload_id(b)):  # a PATCH or another final holds it
        before = tus_backend.tus_state()
        final(testapp, [a, b], status=409)
        assert_untouched(testapp, tus_backend, {a: b"a", b: b"b"}, before)
    final(testapp, [a, b])


def test_damaged_partial_is_410_and_nothing_stored(app: Any, testapp: webtest.TestApp, upload_dir: Path) -> None:
    a, b = partial(testapp, b"aaaa"), partial(testapp, b"bbbb")
    (upload_dir / ".tus" / (upload_id(b) + ".part")).write_bytes(b"bb")  # shorter than recorded
    before = tus_state(upload_dir)
    final(testapp, [a, b], status=410)
    assert stored_files(upload_dir) == [] and tus_state(upload_dir) == before


# -- failures while joining: all or nothing ----------------------------------------------------------


def test_disk_full_while_joining_is_507_and_partials_kept(testapp: webtest.TestApp, upload_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    pieces = {partial(testapp, b"first"): b"first", partial(testapp, b"second"): b"second"}
    before = tus_state(upload_dir)
    calls: list[int] = []
    real = local.copy_range

    def full(src: int, dst: int, count: int, dst_offset: int) -> None:
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst, count, dst_offset)

    monkeypatch.setattr(local, "copy_range", full)
    res = final(testapp, list(pieces), status=507)
    assert "full" in res.text
    monkeypatch.undo()
    assert_untouched(testapp, upload_dir, pieces, before)
    assert testapp.get(final(testapp, list(pieces)).headers["Sessup-File-Url"]).body == b"firstsecond"


def test_disk_full_while_committing_keeps_the_partials(testapp: webtest.TestApp, upload_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from pyramid_sessup.uploads.storage import UploadStorage

    pieces = {partial(testapp, b"one"): b"one", partial(testapp, b"two"): b"two"}
    before = tus_state(upload_dir)

    def full(self: Any, name: str, metadata: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(UploadStorage, "write_metadata", full)
    final(testapp, list(pieces), status=507)
    monkeypatch.undo()
    assert_untouched(testapp, upload_dir, pieces, before)
    final(testapp, list(pieces))


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EXDEV, errno.EINVAL])
def test_join_without_copy_file_range(testapp: webtest.TestApp, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    # Old kernels, other file systems: the pread/pwrite fallback gives the same bytes.
    def unavailable(*args: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(local.os, "copy_file_range", unavailable, raising=False)
    monkeypatch.setattr(local, "READ_STEP", 1000)  # several blocks per partial
    pieces = [os.urandom(2500), os.urandom(999), os.urandom(1)]
    res = final(testapp, [partial(testapp, p) for p in pieces])
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"".join(pieces)


def test_copy_range_copies_large_partials_in_steps(testapp: webtest.TestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "COPY_STEP", 4096)
    pieces = [os.urandom(100_000), os.urandom(4096), os.urandom(5)]
    res = final(testapp, [partial(testapp, p) for p in pieces])
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"".join(pieces)


# -- termination and expiration -------------------------------------------------------------------------


def test_terminated_partial_cannot_be_joined(testapp: webtest.TestApp, upload_dir: Path) -> None:
    a, b = partial(testapp, b"a"), partial(testapp, b"b")
    testapp.delete(b, headers=TUS, status=204)
    final(testapp, [a, b], status=400)
    testapp.delete(a, headers=TUS, status=204)
    assert files_under(upload_dir) == []


def test_terminating_the_final_upload_removes_the_file(testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    res = final(testapp, [partial(testapp, b"a"), partial(testapp, b"b")])
    testapp.delete(res.headers["Location"], headers=TUS, status=204)
    testapp.get(res.headers["Sessup-File-Url"], status=404)
    testapp.head(res.headers["Location"], headers=TUS, status=404)
    assert tus_backend.leftovers() == []


def test_expired_partial_is_410(app: Any, testapp: webtest.TestApp, upload_dir: Path) -> None:
    a, b = partial(testapp, b"a"), partial(testapp, b"b")
    store: TusStore = app.registry.sessup_tus_store
    info = store.load(upload_id(b))
    assert info is not None and info.done
    info.expires = time.time() - 1  # finished, never joined, and its time is up
    store.save(info)
    res = final(testapp, [a, b], status=410)
    assert "expired" in res.text
    testapp.head(b, headers=TUS, status=404)
    testapp.head(a, headers=TUS, status=200)
    assert stored_files(upload_dir) == []


def test_abandoned_partials_are_swept(app: Any, testapp: webtest.TestApp, tus_backend: TusBackend) -> None:
    store: TusStore = app.registry.sessup_tus_store
    finished, unfinished = partial(testapp, b"done"), partial(testapp, None, 9)
    testapp.patch(unfinished, b"half", headers=patch_headers(0), status=204)
    joined = final(testapp, [partial(testapp, b"x")])
    assert store.sweep(now=time.time() + 60) == 0
    assert store.sweep(now=time.time() + 86400 + 60) == 2  # both partials; the final's record goes uncounted
    for loc in (finished, unfinished, joined.headers["Location"]):
        testapp.head(loc, headers=TUS, status=404)
    assert tus_backend.tus_state() == []
    testapp.get(joined.headers["Sessup-File-Url"], status=200)  # the stored file stays


def test_partial_expiry_is_extended_by_each_patch(app: Any, testapp: webtest.TestApp) -> None:
    loc = partial(testapp, None, 4)
    first = testapp.head(loc, headers=TUS).headers["Upload-Expires"]
    time.sleep(1.1)
    res = testapp.patch(loc, b"abcd", headers=patch_headers(0), status=204)
    assert res.headers["Upload-Expires"] != first  # finished, it still shows (and has) an expiry


def test_records_written_before_concatenation_still_load(app: Any, testapp: webtest.TestApp, create: Any) -> None:
    loc = create(4)
    store: TusStore = app.registry.sessup_tus_store
    path = Path(store.dir) / (upload_id(loc) + ".json")
    record = json.loads(path.read_text())
    del record["concat"], record["parts"]
    path.write_text(json.dumps(record))
    assert testapp.head(loc, headers=TUS).headers["Upload-Length"] == "4"
    res = testapp.patch(loc, b"abcd", headers=patch_headers(0), status=204)
    assert testapp.get(res.headers["Sessup-File-Url"]).body == b"abcd"


# -- races ------------------------------------------------------------------------------------------------


def _request(app: Any, method: str, path: str, cookie: str, headers: dict[str, str], body: bytes = b"") -> Any:
    environ = {"REQUEST_METHOD": method, "HTTP_HOST": "example.com", "HTTP_COOKIE": cookie}
    request = webtest.TestRequest.blank(path, environ, headers=headers)
    if body:
        request.body = body
    return request.get_response(app)


def test_concurrent_finals_and_deletes_never_half_join(app: Any, testapp: webtest.TestApp,
                                                       tus_backend: TusBackend) -> None:
    """Two finals on the same partials and a DELETE of one partial, at once,
    for 15 rounds: at most one final wins; a winner is byte-exact; a loser
    leaves nothing; no round ends with a stored file and a partial left."""
    testapp.get("/csrf")  # the visitor cookie that owns the uploads
    cookie = "; ".join(f"{c.name}={c.value}" for c in testapp.cookiejar)
    wins = refusals = 0
    unexpected: list[int] = []
    for _ in range(15):
        pieces = [os.urandom(200_000), os.urandom(150_000), os.urandom(1000)]
        locs = [partial(testapp, p).replace("http://example.com", "") for p in pieces]
        header = {**TUS, "Upload-Concat": "final;" + " ".join(locs)}
        results: list[Any] = []
        barrier = threading.Barrier(3)

        def run(method: str, path: str, headers: dict[str, str]) -> None:
            barrier.wait()
            results.append((method, _request(app, method, path, cookie, headers)))

        threads = [threading.Thread(target=run, args=("POST", "/files/", header)),
                   threading.Thread(target=run, args=("POST", "/files/", header)),
                   threading.Thread(target=run, args=("DELETE", locs[1], TUS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        finals = [r for m, r in results if m == "POST"]
        deleted = [r for m, r in results if m == "DELETE"][0].status_int
        won = [r for r in finals if r.status_int == 201]
        for r in finals:
            if r.status_int not in (201, 400, 409):
                unexpected.append(r.status_int)
        if deleted not in (204, 409, 404):
            unexpected.append(deleted)
        assert len(won) <= 1
        if won:
            wins += 1
            assert deleted in (409, 404)
            assert testapp.get(won[0].headers["Sessup-File-Url"]).body == b"".join(pieces)
            for loc in locs:
                testapp.head(loc, headers=TUS, status=404)
        else:
            refusals += 1
            assert deleted == 204
            for loc in (locs[0], locs[2]):  # untouched, deleted as cleanup
                testapp.delete(loc, headers=TUS, status=204)
    assert unexpected == []
    assert wins + refusals == 15
    assert len(tus_backend.stored()) == wins
    assert not [p for p in tus_backend.leftovers() if ".tmp" in p]
    assert tus_backend.bytes_kept() == []  # finals' records only


def test_joining_under_a_mount_point(app: Any, upload_dir: Path) -> None:
    # Mounted under /app: Locations and the URLs a client sends back carry the prefix.
    mounted = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com", "SCRIPT_NAME": "/app"})
    locs = [partial(mounted, b"left|"), partial(mounted, b"right")]
    assert all(loc.startswith("/app/files/") for loc in locs)
    res = final(mounted, [locs[0], "http://example.com" + locs[1]])
    assert res.headers["Location"].startswith("/app/files/")
    assert mounted.get(res.headers["Sessup-File-Url"]).body == b"left|right"
    final(mounted, ["/files/" + upload_id(partial(mounted, b"x"))], status=400)  # not where this endpoint lives


def test_concurrent_first_creations_of_a_session_all_stay_its_own(app: Any, testapp: webtest.TestApp) -> None:
    """A page that already has its session (GET /csrf) creates its partial
    uploads all at once, as tus-js-client and Uppy do: none may end up owned
    by a token the session forgot.  20 rounds of 8 creations, each round in a
    session that has no upload yet; every upload must stay the session's."""
    lost = 0
    for _ in range(20):
        client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
        client.get("/csrf")
        cookie = "; ".join(f"{c.name}={c.value}" for c in client.cookiejar)
        barrier = threading.Barrier(8)
        locations: list[str] = []

        def create() -> None:
            barrier.wait()
            res = _request(app, "POST", "/files/", cookie, {**TUS, "Upload-Concat": "partial", "Upload-Length": "1"})
            locations.append(res.headers["Location"])

        threads = [threading.Thread(target=create) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(locations) == 8
        for i, loc in enumerate(locations):
            if client.patch(loc, bytes([48 + i]), headers=patch_headers(0), expect_errors=True).status_int != 204:
                lost += 1
        if not lost:
            res = final(client, locations)
            assert client.get(res.headers["Sessup-File-Url"]).body == bytes(48 + i for i in range(8))
    assert lost == 0
