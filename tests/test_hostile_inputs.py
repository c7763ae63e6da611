"""Hostile input never gives a 5xx: a corpus of malformed paths, query strings,
cookies, headers and form bodies, sent with every method to every route of the
application (enumerated from its routes mapper, so a new route is covered by
itself), in process and through a real pserve whose log must hold no traceback.
Undecodable URLs, cookies and forms are answered 400 in plain text.
"""
from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import IRoutesMapper
from webob import Request

import pyramid_sessup

from .s3 import S3Server
from .support import free_port, running_server, write_ini

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
BOUNDARY = "hostileBoundary"


@dataclass(frozen=True)
class Case:
    """One hostile variation of a request; strings are raw latin-1 (PEP 3333)."""

    label: str
    suffix: str = ""  # appended to the route's path
    path: str | None = None  # replaces the path
    query: str = ""
    cookie: str | None = None  # replaces the valid cookies; None keeps them
    headers: dict[str, str] = field(default_factory=dict)  # by CGI name: HTTP_ACCEPT, CONTENT_TYPE, ...
    body: bytes | None = None


CORPUS: tuple[Case, ...] = (
    Case("plain"),
    # -- paths ---------------------------------------------------------------------------
    Case("path %ff", suffix="\xff"),
    Case("path %ff%fe", path="/\xff\xfe"),
    Case("path overlong slash", suffix="\xc0\xaf"),
    Case("path lone surrogate", suffix="\xed\xa0\x80"),
    Case("path truncated utf-8", suffix="\xe4\xb8"),
    Case("path NUL", suffix="\x00"),
    Case("path dot-dot", suffix="/../../etc/passwd"),
    Case("path double slash", suffix="//"),
    Case("path long", suffix="/" + "a" * 4000),
    Case("path control chars", suffix="\r\n\t\x7f"),
    # -- query strings -------------------------------------------------------------------
    Case("query %ff", query="x=%ff"),
    Case("query raw ff", query="x=\xff"),
    Case("query name %ff", query="%ff=1"),
    Case("locale %ff", query="_LOCALE_=%ff"),
    Case("locale NUL", query="_LOCALE_=%00"),
    Case("locale long", query="_LOCALE_=" + "zh" * 3000),
    Case("locale twice", query="_LOCALE_=zh_CN&_LOCALE_=en"),
    Case("locale path", query="_LOCALE_=../../etc"),
    Case("query broken escapes", query="x=%&y=%z&%%=%2"),
    Case("query separators", query="&&;;==&=;"),
    Case("query many", query="&".join(f"k{i}=v" for i in range(2000))),
    # -- cookies -------------------------------------------------------------------------
    Case("cookie ff", cookie="sessup=\xff\xfe"),
    Case("cookie quoted octal", cookie='sessup="\\377\\376"'),
    Case("foreign cookie ff", cookie="legacy=\xe9t\xe9"),
    Case("foreign cookie octal", cookie='legacy="\\351t\\351"; sessup_csrf="\\377"'),
    Case("locale cookie ff", cookie="_LOCALE_=\xff"),
    Case("locale cookie junk", cookie="_LOCALE_=../x; _LOCALE_=zh_CN"),
    Case("nonce cookie ff", cookie="sessup_csrf=\xff\xfe"),
    Case("session cookie twice", cookie="sessup=a; sessup=b"),
    Case("cookie long", cookie="sessup=" + "A" * 8000),
    Case("cookie NUL", cookie="sessup=\x00; sessup_csrf=\x00"),
    Case("cookie separators", cookie="=;=;;;=a=b"),
    # -- headers -------------------------------------------------------------------------
    Case("accept ff", headers={"HTTP_ACCEPT": "\xff/\xfe"}),
    Case("accept bad q", headers={"HTTP_ACCEPT": "application/json;q=abc, */*;q=1e999"}),
    Case("accept-language ff", headers={"HTTP_ACCEPT_LANGUAGE": "\xff;q=\xfe"}),
    Case("accept-language junk", headers={"HTTP_ACCEPT_LANGUAGE": ",;q=," * 500 + "zh-CN;q=x"}),
    Case("content-type ff", headers={"CONTENT_TYPE": "multipart/form-data; boundary=\xff"}),
    Case("content-type charset ff", headers={"CONTENT_TYPE": "text/plain; charset=\xff"}),
    Case("content-type junk", headers={"CONTENT_TYPE": ";;;===\"\"\\"}),
    Case("content-length junk", headers={"CONTENT_LENGTH": "abc"}),
    Case("content-length negative", headers={"CONTENT_LENGTH": "-1"}),
    Case("content-length huge", headers={"CONTENT_LENGTH": "9" * 30}),
    Case("form body ff", headers={"CONTENT_TYPE": "application/x-www-form-urlencoded"},
         body=b"csrf_token=%ff&x=%ff\xfe"),
    Case("form body utf-8 charset junk", headers={"CONTENT_TYPE": "application/x-www-form-urlencoded; charset=x"},
         body=b"csrf_token=%ff"),
    Case("multipart field ff", headers={"CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}"},
         body=(f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n".encode()
               + b"\xff\xfe\r\n" + f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"\xff\"; filename=\"\xfe\""
               "\r\n\r\n".encode("latin-1") + b"\xff\r\n" + f"--{BOUNDARY}--\r\n".encode())),
    Case("csrf header ff", headers={"HTTP_X_CSRF_TOKEN": "\xff\xfe"}),
    Case("csrf header long", headers={"HTTP_X_CSRF_TOKEN": "A" * 10000}),
    Case("origin ff", headers={"HTTP_ORIGIN": "\xff://\xfe"}),
    Case("origin null https", headers={"HTTP_ORIGIN": "null", "wsgi.url_scheme": "https"}),
    Case("referer junk https", headers={"HTTP_REFERER": "::::", "wsgi.url_scheme": "https"}),
    Case("host ff", headers={"HTTP_HOST": "\xff\xfe"}),
    Case("host junk", headers={"HTTP_HOST": "a:b:c:[::"}),
    Case("host empty", headers={"HTTP_HOST": ""}),
    Case("forwarded junk", headers={"HTTP_X_FORWARDED_PROTO": "\xff", "HTTP_X_FORWARDED_HOST": "\xfe",
                                    "HTTP_FORWARDED": "for=\xff;proto=;;"}),
    Case("range ff", headers={"HTTP_RANGE": "bytes=\xff-"}),
    Case("range huge", headers={"HTTP_RANGE": "bytes=99999999999999999999999-"}),
    Case("range reversed", headers={"HTTP_RANGE": "bytes=5-1,-0,0-"}),
    Case("conditional junk", headers={"HTTP_IF_MODIFIED_SINCE": "\xff", "HTTP_IF_NONE_MATCH": "\xff, W/\"",
                                      "HTTP_IF_RANGE": "\xfe", "HTTP_IF_MATCH": "*,,"}),
    Case("tus length ff", headers={"HTTP_UPLOAD_LENGTH": "\xff"}),
    Case("tus length huge", headers={"HTTP_UPLOAD_LENGTH": "9" * 40}),
    Case("tus offset junk", headers={"HTTP_UPLOAD_OFFSET": "-1", "CONTENT_TYPE": "application/offset+octet-stream"},
         body=b"abc"),
    Case("tus metadata ff", headers={"HTTP_UPLOAD_METADATA": "filename \xff\xfe,filetype !!!, ,,a b c"}),
    Case("tus metadata utf-8 junk", headers={"HTTP_UPLOAD_METADATA": "filename /w==,filetype wA=="}),
    Case("tus checksum junk", headers={"HTTP_UPLOAD_CHECKSUM": "sha1 \xff", "HTTP_UPLOAD_LENGTH": "3",
                                       "CONTENT_TYPE": "application/offset+octet-stream"}, body=b"abc"),
    Case("tus version junk", headers={"HTTP_TUS_RESUMABLE": "\xff"}),
    Case("tus defer and concat", headers={"HTTP_UPLOAD_DEFER_LENGTH": "1", "HTTP_UPLOAD_CONCAT": "final;\xff"}),
    Case("method override", headers={"HTTP_X_HTTP_METHOD_OVERRIDE": "\xff"}),
)


def route_patterns(app: Any) -> dict[str, str]:
    """Every route of ``app`` (name -> pattern), from its routes mapper."""
    return {route.name: "/" + route.pattern.lstrip("/")
            for route in app.registry.getUtility(IRoutesMapper).get_routes()}


def fill(pattern: str, name: str, values: dict[str, str]) -> str:
    """A concrete path for route ``name``: placeholders filled from ``values`` (else ``x``)."""
    path = re.sub(r"\{(\w+)(?::[^}]*)?\}", lambda m: values.get(m.group(1), "x"), pattern)
    return re.sub(r"\*(\w+)", lambda m: values.get(name + m.group(1), "x"), path)


@dataclass
class Target:
    app: Any
    paths: dict[str, str]
    cookie: str
    token: str


def prepare(app: Any) -> Target:
    """Real things for the routes to find: a session, a stored file, a tus upload."""
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})
    token = client.get("/csrf").json["csrf_token"]
    client.get("/session")
    stored = client.post("/upFile", {"csrf_token": token}, upload_files=[("inputFile", "a.txt", b"hello")]).text
    location = client.post("/files/", headers={"Tus-Resumable": "1.0.0", "Upload-Length": "10"}).headers["Location"]
    cookie = "; ".join(f"{c.name}={c.value}" for c in client.cookiejar)
    values = {"name": stored.rsplit("/", 1)[1], "id": location.rsplit("/", 1)[1], "slash": "/",
              "__static/subpath": "sessup.css", "__deform_static/subpath": "css/form.css"}
    return Target(app, {name: fill(pattern, name, values) for name, pattern in route_patterns(app).items()},
                  cookie, token)


def default_body(method: str) -> tuple[bytes, str]:
    if method == "PATCH":
        return b"abc", "application/offset+octet-stream"
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"a.txt\"\r\n\r\n"
            f"data\r\n--{BOUNDARY}--\r\n").encode(), f"multipart/form-data; boundary={BOUNDARY}"


def environ_for(target: Target, path: str, method: str, case: Case) -> tuple[dict[str, Any], bytes]:
    """The WSGI environ (and body) of ``case`` against ``path`` with ``method``."""
    body, content_type = (b"", "") if method in ("GET", "HEAD", "DELETE", "OPTIONS") else default_body(method)
    if case.body is not None:
        body = case.body
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": case.path if case.path is not None else path + case.suffix,
        "QUERY_STRING": case.query, "HTTP_HOST": "example.com", "HTTP_COOKIE": target.cookie,
        "HTTP_X_CSRF_TOKEN": target.token, "HTTP_TUS_RESUMABLE": "1.0.0", "HTTP_UPLOAD_OFFSET": "0",
        "HTTP_UPLOAD_LENGTH": "3", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
    }
    if case.cookie is not None:
        environ["HTTP_COOKIE"] = case.cookie
    environ.update(case.headers)
    return environ, body


def every_request(target: Target) -> Iterator[tuple[str, dict[str, Any], bytes]]:
    for name, path in sorted(target.paths.items()):
        for case in CORPUS:
            for method in METHODS:
                environ, body = environ_for(target, path, method, case)
                yield f"{method} {name} [{case.label}]", environ, body


def call(app: Any, environ: dict[str, Any], body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
    request = Request.blank("/", body=body)
    request.environ.update(environ)  # raw values, as a server hands them over
    response = request.get_response(app, catch_exc_info=False)
    return response.status_int, response.body, response.headerlist


@pytest.fixture
def target(app: Any) -> Target:
    return prepare(app)


def test_routes_are_enumerated_from_the_mapper(target: Target) -> None:
    # Every route the application has is in the corpus run, the optional ones included.
    assert {"sessup.csrf", "sessup.upload", "sessup.upload_download", "sessup.tus", "sessup.tus_upload",
            "home", "sessup.upload_form", "__static/"} <= set(target.paths)
    assert target.paths["sessup.tus_upload"].startswith("/files/") and "{" not in "".join(target.paths.values())


def test_no_5xx_and_no_traceback_for_any_hostile_input(target: Target, caplog: pytest.LogCaptureFixture) -> None:
    assert_no_5xx_and_no_traceback(target, caplog)


def test_no_5xx_and_no_traceback_with_object_storage(make_app: Any, s3_server: S3Server, s3_bucket: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The same corpus with uploads in a bucket of the S3 server process."""
    target = prepare(make_app(**s3_server.settings(s3_bucket)))
    assert_no_5xx_and_no_traceback(target, caplog)
    assert s3_server.unfinished(s3_bucket) == []


def assert_no_5xx_and_no_traceback(target: Target, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    failures = []
    count = 0
    for label, environ, body in every_request(target):
        count += 1
        try:
            status, _, _ = call(target.app, environ, body)
        except Exception as exc:  # what waitress would answer 500, with a traceback
            failures.append(f"{label}: raised {type(exc).__name__}: {exc}")
            continue
        if status >= 500:
            failures.append(f"{label}: {status}")
    assert count >= len(target.paths) * len(CORPUS) * len(METHODS)
    assert not failures, f"{len(failures)} of {count} requests failed:\n" + "\n".join(failures[:60])
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert not tracebacks, tracebacks[0].getMessage()


@pytest.mark.parametrize("url", ["/?x=%ff", "/%ff%fe", "/uploads/%ff", "/?_LOCALE_=%ff", "/csrf?x=%FF",
                                 "/session/page?_LOCALE_=%ff", "/files/%ff", "/static/%ff"])
def test_undecodable_url_is_400_text(testapp: webtest.TestApp, url: str) -> None:
    res = testapp.get(url, status=400)
    assert res.content_type == "text/plain" and "UTF-8" in res.text
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert res.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in res.headers


def test_undecodable_cookie_or_form_is_400(testapp: webtest.TestApp) -> None:
    # A page reads the locale cookie through WebOb, which decodes every cookie
    # (a quoted value's octal escapes included).
    res = testapp.get("/", headers={"Cookie": 'legacy="\\351t\\351"'}, status=400)
    assert "UTF-8" in res.text
    # Pyramid's CSRF check reads the form when no X-CSRF-Token header comes: WebOb
    # replaces undecodable bytes there (a wrong token), and refuses another charset.
    testapp.get("/csrf")
    testapp.post("/session/regenerate", b"csrf_token=%ff", content_type="application/x-www-form-urlencoded",
                 status=403)
    res = testapp.post("/session/regenerate", b"csrf_token=x", status=400,
                       content_type="application/x-www-form-urlencoded; charset=latin-1")
    assert "UTF-8" in res.text
    # Our own cookies are read from the raw header: a bad one is no cookie, not an error.
    assert testapp.get("/session", headers={"Cookie": "sessup=\xff\xfe"}).json == {"views": 1}


def test_a_decode_error_no_input_explains_is_still_a_500(settings: dict[str, Any]) -> None:
    """The 400 is for bad input only: a bug that raises UnicodeDecodeError is not hidden."""

    def buggy(request: Any) -> Any:
        return b"\xff".decode("utf-8")

    with Configurator(settings=settings) as config:
        config.include(pyramid_sessup.includeme)
        config.include("pyramid_sessup.badrequest")
        config.add_route("buggy", "/buggy")
        config.add_view(buggy, route_name="buggy", renderer="string")
    app = config.make_wsgi_app()
    with pytest.raises(UnicodeDecodeError):
        Request.blank("/buggy").get_response(app, catch_exc_info=False)
    assert Request.blank("/buggy?x=%ff").get_response(app).status_int == 400


# -- through a real server ----------------------------------------------------------------------


def raw_request(port: int, method: str, line: str, headers: list[tuple[str, str]], body: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side validation): ``(status, body)``, status 0 if the server hung up."""
    head = [f"{method} {line} HTTP/1.1", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", reply)
    return (int(match.group(1)), reply) if match else (0, reply)


def on_the_wire(environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The request line target and the headers of ``environ``, raw."""
    path = "".join(c if 0x21 <= ord(c) < 0x7F and c not in "%?#" else f"%{ord(c):02X}" for c in environ["PATH_INFO"])
    line = path + ("?" + environ["QUERY_STRING"] if environ["QUERY_STRING"] else "")
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-"), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((key.replace("_", "-"), value))
    return line, headers


def prepare_over_http(port: int, paths: dict[str, str]) -> Target:
    """:func:`prepare`, against a running server."""
    def send(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
        status, reply = raw_request(port, method, path, [("Host", "127.0.0.1"), *headers,
                                                         ("Content-Length", str(len(body)))], body)
        assert status in (200, 201), reply[:500]
        return reply

    def cookies_of(reply: bytes) -> list[str]:
        return [m.decode() for m in re.findall(rb"\r\nSet-Cookie: ([^;\r]+)", reply, re.I)]

    reply = send("GET", "/csrf", [])
    nonce = cookies_of(reply)
    token = re.search(rb'"csrf_token": "([^"]+)"', reply).group(1).decode()
    session = cookies_of(send("GET", "/session", []))
    cookie = "; ".join(nonce + session)
    body, content_type = default_body("POST")
    stored = send("POST", "/upFile", [("Cookie", cookie), ("X-CSRF-Token", token), ("Content-Type", content_type)],
                  body).rsplit(b"/", 1)[1].decode()
    location = re.search(rb"\r\nLocation: [^\r]*/files/([^\r]+)", send(
        "POST", "/files/", [("Cookie", cookie), ("Tus-Resumable", "1.0.0"), ("Upload-Length", "10")]), re.I)
    values = {"name": stored, "id": location.group(1).decode(), "slash": "/",
              "__static/subpath": "sessup.css", "__deform_static/subpath": "css/form.css"}
    return Target(None, {name: fill(pattern, name, values) for name, pattern in paths.items()}, cookie, token)


@pytest.mark.server
def test_no_5xx_and_no_traceback_through_pserve(tmp_path: Path, app: Any) -> None:
    port = free_port()
    (tmp_path / "srv-uploads").mkdir()
    ini = write_ini(tmp_path, {"sessup.upload.path": str(tmp_path / "srv-uploads"), "sessup.session.store": "file",
                               "sessup.session.file.path": str(tmp_path / "srv-sessions")}, port=port)
    with running_server(ini, port) as server:
        # The routes of the same application, from its mapper.
        target = prepare_over_http(port, route_patterns(app))
        statuses: dict[int, int] = {}
        bad = []
        for case in CORPUS:
            for name, path in sorted(target.paths.items()):
                for method in ("GET", "POST", "PATCH"):
                    environ, body = environ_for(target, path, method, case)
                    line, headers = on_the_wire(environ)
                    status, reply = raw_request(port, method, line, headers, body)
                    statuses[status] = statuses.get(status, 0) + 1
                    if status >= 500 or status == 0:
                        bad.append(f"{method} {name} [{case.label}]: {status} {reply[:120]!r}")
        log = server.log()
    assert not bad, f"{len(bad)} answers were 5xx or none:\n" + "\n".join(bad[:60])
    assert "Traceback" not in log and "Exception while serving" not in log, log[-3000:]
    assert statuses.get(400, 0) > 0 and statuses.get(200, 0) > 0  # the corpus reached real views
