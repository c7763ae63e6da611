"""CSRF on POST /upFile: X-CSRF-Token header (checked before the body is read)
or a csrf_token field before the files (checked when the first file starts);
a request without a session is refused unread; a refusal keeps nothing."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import pytest
import webtest

from .conftest import MULTIPART, RaisingInput, body, leftovers, part, post_body, raw_call

DATA = body(part("inputFile", b"secret payload", filename="a.txt"))


@pytest.fixture
def csrf_client(upapp: Callable[..., webtest.TestApp]) -> webtest.TestApp:
    return upapp(**{"sessup.upload.require_csrf": "true"})


def token_of(client: webtest.TestApp) -> str:
    return client.get("/csrf").json["csrf_token"]


def post(client: webtest.TestApp, data: bytes, **headers: str) -> webtest.TestResponse:
    return post_body(client, data, **headers)


def test_token_in_header(csrf_client: webtest.TestApp, upload_dir: Path) -> None:
    token = token_of(csrf_client)
    res = post(csrf_client, DATA, **{"X-CSRF-Token": token})
    assert res.status_int == 200 and res.text.startswith("/uploads/")


def test_token_in_field(csrf_client: webtest.TestApp) -> None:
    token = token_of(csrf_client)
    data = body(part("csrf_token", token.encode()), part("inputFile", b"x", filename="a.txt"), part("n", b"1"))
    res = post(csrf_client, data, Accept="application/json")
    assert res.status_int == 200
    assert res.json["fields"] == {"n": ["1"]}  # the token is not echoed
    # WebTest's own multipart encoder, as a form post would be sent.
    res = csrf_client.post("/upFile", params={"csrf_token": token}, upload_files=[("inputFile", "b.txt", b"y")])
    assert res.status_int == 200


def test_token_field_after_the_file_is_refused_before_the_file_is_written(
        csrf_client: webtest.TestApp, upload_dir: Path) -> None:
    """A field token must come first: without one, not a byte of a file is
    written (a refused upload costs no disk), and the 403 says so."""
    token = token_of(csrf_client)
    data = body(part("inputFile", b"x", filename="a.txt"), part("csrf_token", token.encode()))
    res = post(csrf_client, data, Accept="application/json")
    assert res.status_int == 403 and "before the files" in res.json["error"]
    assert res.json["code"] == "csrf_token_missing"
    assert leftovers(upload_dir) == []


def test_field_token_checked_when_the_first_file_starts(csrf_client: webtest.TestApp, upload_dir: Path) -> None:
    """A wrong field token is refused as soon as the file part begins: the
    rest of the body is never read."""
    token_of(csrf_client)
    head = body(part("csrf_token", b"forged"), part("inputFile", b"x", filename="a.txt"), close=False)
    block = csrf_client.app.registry.sessup_settings.upload.chunk_size
    data = head + b"y" * (4 * block)
    stream = RaisingInput(data, AssertionError("read past the refusal"))
    cookie = "; ".join(f"{c.name}={c.value}" for c in csrf_client.cookiejar)
    res = raw_call(csrf_client.app, stream, len(data), headers={"Cookie": cookie, "Host": "example.com"})
    assert res.status_int == 403
    assert stream.data.tell() <= block + len(head)  # one block at most (sessup.upload.chunk_size)
    assert leftovers(upload_dir) == []


def test_no_session_is_refused_before_the_body_is_read(csrf_client: webtest.TestApp, upload_dir: Path) -> None:
    """Without a session cookie no token can be right: 403 with the body unread."""
    data = body(part("csrf_token", b"anything"), part("inputFile", b"x", filename="a.txt"))
    for headers in ({}, {"X-CSRF-Token": "anything"}):
        stream = RaisingInput(data, AssertionError("the body must not be read"))
        res = raw_call(csrf_client.app, stream, len(data), headers=headers)
        assert res.status_int == 403 and stream.data.tell() == 0
    assert leftovers(upload_dir) == []


@pytest.mark.parametrize("how", ["none", "wrong header", "wrong field", "empty field", "empty header",
                                 "wrong header right field", "no session"])
def test_refused_without_the_right_token(csrf_client: webtest.TestApp, upload_dir: Path, how: str) -> None:
    token = token_of(csrf_client)
    headers: dict[str, str] = {}
    data = DATA
    if how == "wrong header":
        headers["X-CSRF-Token"] = "x" * len(token)
    elif how == "empty header":
        headers["X-CSRF-Token"] = ""
    elif how == "wrong field":
        data = body(part("csrf_token", b"nope"), part("inputFile", b"x", filename="a.txt"))
    elif how == "empty field":
        data = body(part("csrf_token", b""), part("inputFile", b"x", filename="a.txt"))
    elif how == "wrong header right field":
        headers["X-CSRF-Token"] = "wrong"
        data = body(part("csrf_token", token.encode()), part("inputFile", b"x", filename="a.txt"))
    elif how == "no session":
        csrf_client.reset()
        data = body(part("csrf_token", token.encode()), part("inputFile", b"x", filename="a.txt"))
    res = post(csrf_client, data, **headers)
    assert res.status_int == 403, res.text
    assert "CSRF" in res.text
    assert leftovers(upload_dir) == []
    res = post(csrf_client, data, Accept="application/json", **headers)
    assert res.status_int == 403 and "CSRF" in res.json["error"]
    assert leftovers(upload_dir) == []


def test_wrong_header_refused_before_the_body_is_read(csrf_client: webtest.TestApp, upload_dir: Path) -> None:
    stream = RaisingInput(DATA, AssertionError("the body must not be read"))
    stream.data.seek(0)
    res = raw_call(csrf_client.app, stream, len(DATA), headers={"X-CSRF-Token": "forged"})
    assert res.status_int == 403 and stream.data.tell() == 0
    assert leftovers(upload_dir) == []


def test_https_cross_origin_is_refused(csrf_client: webtest.TestApp, upload_dir: Path) -> None:
    # Pyramid's origin check (HTTPS only) still applies although the view opts out of Pyramid's CSRF check.
    token = token_of(csrf_client)

    def post_https(origin: str) -> webtest.TestResponse:
        return csrf_client.request("https://example.com/upFile", method="POST", body=DATA, content_type=MULTIPART,
                                   status="*", headers={"X-CSRF-Token": token, "Origin": origin})

    assert post_https("https://evil.example").status_int == 403
    assert leftovers(upload_dir) == []
    assert post_https("https://example.com").status_int == 200


def test_csrf_is_required_by_default(settings: dict, upload_dir: Path) -> None:
    from .conftest import addon_app

    client = webtest.TestApp(addon_app(settings), extra_environ={"HTTP_HOST": "example.com"})
    assert post(client, DATA).status_int == 403
    assert leftovers(upload_dir) == []
    assert raw_call(client.app, io.BytesIO(DATA), len(DATA)).status_int == 403
