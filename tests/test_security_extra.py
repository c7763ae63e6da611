"""Threats of SECURITY.md that no other module's tests cover on their own.

Names (reserved device names, dot files, unpredictable stored names), server
paths in answers, linear parsing of hostile header parameters (ReDoS), CR/LF
junk around a multipart body, slow request bodies against real waitress, and
the ``Secure`` cookie flag behind a trusted proxy.
"""
from __future__ import annotations

import configparser
import http.client
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import webtest

from pyramid_sessup.uploads.storage import NAME_PATTERN, TEMP_PATTERN, UploadStorage

from .support import free_port, running_server, write_ini
from .uploads.conftest import BOUNDARY, MULTIPART, body, leftovers, part

HANG_GUARD = 60.0  # seconds; only a runaway (catastrophic backtracking) comes near it


@pytest.fixture
def client(make_app: Callable[..., Any]) -> webtest.TestApp:
    return webtest.TestApp(make_app(**{"sessup.upload.require_csrf": "false"}))


def post(client: webtest.TestApp, data: bytes, content_type: str = MULTIPART, **headers: str) -> Any:
    return client.request("/upFile", method="POST", body=data, content_type=content_type, status="*",
                          headers=headers)


# --------------------------------------------------------------------------- names

RESERVED = ["CON", "con.txt", "NUL", "nul.txt", "AUX.", "PRN.txt", "COM1.txt", "LPT1", ".htaccess", ".user.ini",
            "web.config", "index.php", "x.txt::$DATA", "x.txt.", "~", ".", ".."]


@pytest.mark.parametrize("filename", RESERVED)
def test_reserved_names_are_only_metadata(client: webtest.TestApp, upload_dir: Path, filename: str) -> None:
    """Device names, dot files and server config names are shown back as text;
    the file is stored under a generated name, never under (or as) the given one."""
    res = post(client, body(part("inputFile", b"<?php system($_GET['c']);", filename=filename)),
               Accept="application/json")
    assert res.status_int == 200, res.text
    [info] = res.json["files"]
    assert NAME_PATTERN.fullmatch(info["stored_name"])
    assert info["stored_name"].split(".")[0] != filename.split(".")[0]
    assert not info["stored_name"].endswith(".php")  # never an extension a web server executes
    stored = {p.name for p in upload_dir.iterdir() if not p.name.startswith(".")}
    assert stored == {info["stored_name"]}  # no dot file, no device name: only the generated name
    download = client.get(info["url"])
    assert download.content_type in ("application/octet-stream", "text/plain")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert download.headers["Content-Security-Policy"] == "sandbox"


def test_stored_and_temporary_names_are_unpredictable(client: webtest.TestApp, upload_dir: Path) -> None:
    """Names come from ``secrets`` (192 bits): the same file sent 64 times gets
    64 unrelated names, none derived from the client's name or the content."""
    paths = []
    for _ in range(64):
        res = post(client, body(part("inputFile", b"same bytes", filename="report.txt")), Accept="application/json")
        paths.append(res.json["files"][0]["stored_name"])
    tokens = [p.split(".")[0] for p in paths]
    assert len(set(tokens)) == 64
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", t) for t in tokens)
    assert not any("report" in p for p in paths)
    # No long common prefix, as a counter or a timestamp would give.
    assert len(os.path.commonprefix(tokens)) < 4
    storage = UploadStorage(str(upload_dir))
    temps = []
    for _ in range(16):
        f, path = storage.open_temp()
        f.close()
        temps.append(os.path.basename(path))
        storage.discard(path)
    assert len(set(temps)) == 16 and all(TEMP_PATTERN.fullmatch(t) for t in temps)


XSS_NAME = "<img src=x onerror=alert(1)>"


def test_names_and_text_are_escaped_in_pages_and_never_served_as_html(make_app: Callable[..., Any]) -> None:
    """Stored XSS through what users typed: file names and the description are
    escaped on the form's result and error pages, and /upFile reflects a name
    only in text/plain or JSON answers, never in HTML."""
    app = webtest.TestApp(make_app(**{"sessup.upload.allowed_extensions": "txt"}))
    token = app.get("/upload").forms["upload-form"]["csrf_token"].value
    ok = app.post("/upload", [("csrf_token", token), ("description", "<script>alert(2)</script>")],
                  upload_files=[("inputFile", XSS_NAME + ".txt", b"x")], status=303).follow()
    assert ok.status_int == 200
    assert XSS_NAME not in ok.text and "<script>alert(2)" not in ok.text
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in ok.text
    # The refusal of a limit names the file, escaped too.
    small = webtest.TestApp(make_app(**{"sessup.upload.max_file_size": "10", "sessup.upload.max_total_size": "20"}))
    small_token = small.get("/upload").forms["upload-form"]["csrf_token"].value
    too_large = small.post("/upload", [("csrf_token", small_token), ("description", "d")],
                           upload_files=[("inputFile", XSS_NAME + ".txt", b"x" * 50)], status=413)
    assert XSS_NAME not in too_large.text and "&lt;img src=x onerror=alert(1)&gt;.txt is larger than" in too_large.text
    refused = app.post("/upload", [("csrf_token", token), ("description", "d")],
                       upload_files=[("inputFile", XSS_NAME + ".html", b"x")], status="*")
    assert refused.status_int == 400
    assert XSS_NAME not in refused.text and "&lt;img" in refused.text
    for accept in ("text/html", "*/*", "application/json"):
        res = app.post("/upFile", upload_files=[("inputFile", XSS_NAME + ".exe", b"x")],
                       headers={"X-CSRF-Token": token, "Accept": accept}, status="*")
        assert res.status_int == 415
        assert res.content_type in ("text/plain", "application/json"), res.content_type


# --------------------------------------------------------------------------- server paths

def test_no_server_path_in_any_answer(make_app: Callable[..., Any], tmp_path: Path, upload_dir: Path) -> None:
    """Successes answer URLs and stored names; errors name the problem and the
    setting, never a filesystem path of the server."""
    client = webtest.TestApp(make_app(**{"sessup.upload.require_csrf": "false",
                                         "sessup.upload.max_file_size": "10", "sessup.upload.max_total_size": "10"}))
    csrf_client = webtest.TestApp(make_app())
    answers = [
        post(client, body(part("inputFile", b"ok", filename="../../etc/passwd"))),
        post(client, body(part("inputFile", b"ok", filename="a.txt")), Accept="application/json"),
        post(client, body(part("inputFile", b"x" * 11, filename="big.bin"))),
        post(client, body(part("inputFile", b"x" * 11, filename="big.bin")), Accept="application/json"),
        post(client, body(part("inputFile", b"x", filename="a.txt"), close=False)),
        post(client, b"", content_type="text/plain"),
        post(csrf_client, body(part("inputFile", b"x", filename="a.txt"))),
        client.get("/uploads/" + "A" * 32, status="*"),
        client.get("/uploads/..%2F..%2Fetc%2Fpasswd", status="*"),
        client.get("/uploads/.tmp", status="*"),
    ]
    statuses = [a.status_int for a in answers]
    assert statuses == [200, 200, 413, 413, 400, 415, 403, 404, 404, 404]
    for answer in answers:
        text = answer.body.decode("utf-8", "replace")
        for secret_path in (str(tmp_path), str(upload_dir), "/tmp/", os.getcwd()):
            assert secret_path not in text, (answer.status, text)
        assert "Traceback" not in text


# --------------------------------------------------------------------------- parsing

def _within_guard(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; a runaway parser fails the test instead of hanging the run."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert not thread.is_alive(), "the parser did not finish: catastrophic backtracking?"
    return result[0]


HOSTILE_DISPOSITIONS = {
    "7000 semicolons": 'form-data; name="inputFile"; filename="a.txt"' + ";" * 7000,
    "3500 escaped quotes": 'form-data; name="inputFile"; filename="' + '\\"' * 3500 + '"',
    "unclosed quotes": 'form-data; name="inputFile"; filename="' + 'a; b="' * 1000,
    "7000 equals signs": 'form-data; name="inputFile"; filename="a.txt"; ' + "=" * 7000,
    "7000 percent signs": "form-data; name=\"inputFile\"; filename*=UTF-8''" + "%" * 7000,
    "2000 parameters": 'form-data; name="inputFile"; filename="a.txt"' + "; a=b" * 1500,
}


@pytest.mark.parametrize("label", list(HOSTILE_DISPOSITIONS))
def test_hostile_part_header_parameters_parse_in_linear_time(client: webtest.TestApp, upload_dir: Path,
                                                             label: str) -> None:
    """Header parameter parsing is a single pass (no backtracking regular
    expression): each hostile Content-Disposition gets an answer, never a 500."""
    data = body(part("", b"payload", disposition=HOSTILE_DISPOSITIONS[label]))
    res = _within_guard(lambda: post(client, data, Accept="application/json"))
    assert res.status_int in (200, 400, 413), res.text
    if res.status_int == 200:
        [info] = res.json["files"]
        assert NAME_PATTERN.fullmatch(info["stored_name"]) and len(info["filename"].encode()) <= 255
    else:
        assert leftovers(upload_dir) == []


@pytest.mark.parametrize("suffix", [';a="\\' * 3000, "; " + "=" * 30000, '; boundary="' + "x" * 30000,
                                    ";" * 30000], ids=["escapes", "equals", "long quoted boundary", "semicolons"])
def test_hostile_content_type_parameters_parse_in_linear_time(client: webtest.TestApp, upload_dir: Path,
                                                              suffix: str) -> None:
    data = body(part("inputFile", b"x", filename="a.txt"))
    res = _within_guard(lambda: post(client, data, content_type=f"multipart/form-data; boundary={BOUNDARY}{suffix}"))
    assert res.status_int in (200, 400), res.text
    if res.status_int == 400:
        assert leftovers(upload_dir) == []


@pytest.mark.parametrize("where", ["preamble", "epilogue", "both"])
def test_crlf_junk_around_the_body_is_cheap_and_harmless(client: webtest.TestApp, upload_dir: Path,
                                                         where: str) -> None:
    """A megabyte of CR/LF before the first or after the last boundary (RFC
    2046 preamble/epilogue; the trick behind python-multipart's
    CVE-2024-53981) is skipped in one pass: the file is stored exactly once."""
    junk = b"\r\n" * (512 * 1024)
    good = body(part("inputFile", b"payload", filename="a.txt"))
    data = (junk if where != "epilogue" else b"") + good + (junk if where != "preamble" else b"")
    res = _within_guard(lambda: post(client, data, Accept="application/json"))
    assert res.status_int == 200, res.text
    [info] = res.json["files"]
    assert info["size"] == len(b"payload")
    assert [p for p in leftovers(upload_dir) if not p.startswith(".meta")] == [info["stored_name"]]


# --------------------------------------------------------------------------- real waitress

def _server_ini(tmp_path: Path, port: int, server_options: dict[str, str], **app: str) -> Path:
    ini = write_ini(tmp_path, {"sessup.upload.path": str(tmp_path / "uploads"), **app}, port=port)
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ini)
    for key, value in server_options.items():
        parser.set("server:main", key, value)
    with open(ini, "w") as f:
        parser.write(f)
    return ini


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
@pytest.mark.server
def test_slow_bodies_hold_no_worker_and_stalled_ones_are_dropped(tmp_path: Path) -> None:
    """Waitress reads bodies in its event loop, so clients that send slowly
    (or stop) hold no worker thread: with a single worker, other requests are
    still served.  A stalled connection is closed after ``channel_timeout``
    and leaves nothing behind."""
    port = free_port()
    ini = _server_ini(tmp_path, port, {"threads": "1", "channel_timeout": "3", "cleanup_interval": "1"},
                      **{"sessup.upload.require_csrf": "false"})
    upload_dir = tmp_path / "uploads"
    with running_server(ini, port) as server:
        baseline_files = leftovers(upload_dir)
        data = body(part("inputFile", b"s" * (1024 * 1024), filename="slow.bin"))
        head = (f"POST /upFile HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
                f"Content-Length: {len(data)}\r\n\r\n").encode()
        baseline_fds = _fds(server.pid)
        slow = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
            s.sendall(head + data[:100])
            slow.append(s)
        try:
            # A dribbling client and eight stalled ones; the single worker still answers.
            for i in range(5):
                slow[0].sendall(data[100 + i: 101 + i])
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD)
                conn.request("GET", "/session", headers={"Accept": "application/json"})
                resp = conn.getresponse()
                assert resp.status == 200 and json.loads(resp.read())["views"] == 1
                conn.close()
                time.sleep(0.2)
            # Stalled connections are closed by the server (recv sees EOF or a reset).
            for s in slow[1:]:
                try:
                    assert s.recv(1024) == b""
                except ConnectionResetError:
                    pass
        finally:
            for s in slow:
                s.close()
        deadline = time.monotonic() + HANG_GUARD
        while _fds(server.pid) > baseline_fds and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _fds(server.pid) <= baseline_fds
        assert leftovers(upload_dir) == baseline_files


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("trusted", [True, False], ids=["trusted proxy", "no proxy trusted"])
def test_secure_cookie_behind_a_trusted_proxy(tmp_path: Path, trusted: bool) -> None:
    """``cookie.secure = auto`` through real waitress: ``X-Forwarded-Proto:
    https`` from the trusted proxy gives a ``Secure`` cookie; the same header
    from an untrusted peer is dropped, so a client cannot fake HTTPS."""
    port = free_port()
    options = {"clear_untrusted_proxy_headers": "true"}
    if trusted:
        options.update({"trusted_proxy": "127.0.0.1",
                        "trusted_proxy_headers": "x-forwarded-proto x-forwarded-host x-forwarded-for"})
    ini = _server_ini(tmp_path, port, options, **{"sessup.session.cookie.secure": "auto"})
    with running_server(ini, port):
        for proto, secure in (("https", trusted), ("http", False), (None, False)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD)
            headers = {"Accept": "application/json"}
            if proto:
                headers["X-Forwarded-Proto"] = proto
            conn.request("GET", "/session", headers=headers)
            resp = conn.getresponse()
            resp.read()
            cookie = resp.getheader("Set-Cookie") or ""
            conn.close()
            assert cookie.startswith("sessup=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
            assert ("; Secure" in cookie) is secure, (proto, cookie)


# --------------------------------------------------------------------------- memory

def _tus_upload(app: webtest.TestApp, token: str, i: int) -> None:
    import base64

    headers = {"Tus-Resumable": "1.0.0", "X-CSRF-Token": token, "Upload-Length": "5",
               "Upload-Metadata": "filename " + base64.b64encode(f"t{i}.txt".encode()).decode()}
    location = app.post("/files/", headers=headers).headers["Location"]
    app.patch(location, b"hello", headers={"Tus-Resumable": "1.0.0", "X-CSRF-Token": token, "Upload-Offset": "0",
                                           "Content-Type": "application/offset+octet-stream"}, status=204)


@pytest.mark.parametrize("endpoint", ["upFile", "form", "tus"])
def test_uploads_leave_no_per_name_state_in_memory(make_app: Callable[..., Any], endpoint: str) -> None:
    """Memory must not grow with the number of uploads: nothing keyed by a
    stored name or upload id may be kept after the request.  (Pyramid's
    ``route_path``/``route_url`` cache every quoted path segment forever,
    ``pyramid.traversal._segment_cache``; with random names that would keep
    about 290 bytes per upload.)"""
    from pyramid import traversal

    app = webtest.TestApp(make_app(), extra_environ={"HTTP_HOST": "example.com"})
    token = app.get("/csrf", headers={"Accept": "application/json"}).json["csrf_token"]

    def upload(i: int) -> None:
        if endpoint == "upFile":
            app.post("/upFile", upload_files=[("inputFile", f"f{i}.txt", b"x")], headers={"X-CSRF-Token": token})
        elif endpoint == "form":
            app.post("/upload", [("csrf_token", token), ("description", "d")],
                     upload_files=[("inputFile", f"f{i}.txt", b"x")])
        else:
            _tus_upload(app, token, i)

    upload(0)
    before = len(traversal._segment_cache)
    for i in range(50):
        upload(i + 1)
    assert len(traversal._segment_cache) - before < 5


def test_file_store_keeps_no_descriptor_of_a_finished_thread(tmp_path: Path) -> None:
    from pyramid_sessup.signing import new_session_id
    from pyramid_sessup.stores.file import FileStore

    store = FileStore(str(tmp_path / "sessions"), timeout=60)
    sids = [new_session_id() for _ in range(64)]  # every stripe
    for sid in sids:
        store.create(sid, {"a": 1})
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        thread = threading.Thread(target=lambda: [store.load(sid) for sid in sids])
        thread.start()
        thread.join()
    assert len(os.listdir("/proc/self/fd")) <= before
