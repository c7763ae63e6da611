"""Every refusal of ``/upFile`` carries a stable ``code`` and the limit as
numbers for scripts (JSON), keeps a text message naming the setting for
people reading logs, and leaves nothing on disk."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import webtest

from .conftest import MULTIPART, body, leftovers, part

JSON = {"Accept": "application/json"}


def post(client: webtest.TestApp, data: bytes, content_type: str = MULTIPART, **headers: str) -> Any:
    return client.request("/upFile", method="POST", body=data, content_type=content_type, status="*",
                          headers={**JSON, **headers})


LIMITS = {"sessup.upload.max_file_size": "1000", "sessup.upload.max_total_size": "1500",
          "sessup.upload.max_files": "3", "sessup.upload.max_fields": "2", "sessup.upload.max_field_size": "100",
          "sessup.upload.max_header_size": "300"}

CASES = [
    ("file_too_large", 413, body(part("inputFile", b"x" * 1001, filename="big.bin")),
     {"limit": 1000, "setting": "sessup.upload.max_file_size", "filename": "big.bin"}),
    ("total_too_large", 413, body(part("inputFile", b"a" * 900, filename="a.bin"),
                                  part("inputFile", b"b" * 900, filename="b.bin")),
     {"limit": 1500, "setting": "sessup.upload.max_total_size", "filename": "b.bin"}),
    ("too_many_files", 413, body(*(part("inputFile", b"x", filename=f"{i}.txt") for i in range(4))),
     {"limit": 3, "setting": "sessup.upload.max_files"}),
    ("too_many_fields", 413, body(*(part(f"f{i}", b"x") for i in range(3)), part("inputFile", b"x", filename="a")),
     {"limit": 2, "setting": "sessup.upload.max_fields"}),
    ("field_too_large", 413, body(part("note", b"n" * 101), part("inputFile", b"x", filename="a.txt")),
     {"limit": 100, "setting": "sessup.upload.max_field_size", "field": "note"}),
    ("header_too_large", 413, body(part("inputFile", b"x", filename="n" * 400 + ".txt")),
     {"limit": 300, "setting": "sessup.upload.max_header_size"}),
    ("no_file", 400, body(part("note", b"just text")), {"field": "inputFile"}),
    ("unexpected_file_field", 400, body(part("other", b"x", filename="a.txt")), {"field": "other"}),
    ("malformed_body", 400, b"--nope\r\n", {}),
]


@pytest.mark.parametrize("code, status, data, details", CASES, ids=[c[0] for c in CASES])
def test_each_refusal_has_a_stable_code_and_numbers(upapp: Callable[..., webtest.TestApp], upload_dir: Path,
                                                    code: str, status: int, data: bytes,
                                                    details: dict[str, Any]) -> None:
    client = upapp(**LIMITS)
    res = post(client, data)
    assert res.status_int == status
    assert res.json["code"] == code
    assert {key: res.json[key] for key in details} == details
    assert isinstance(res.json["error"], str) and res.json["error"]
    # The text answer names the setting for whoever reads it.
    text = client.request("/upFile", method="POST", body=data, content_type=MULTIPART, status="*")
    assert text.status_int == status and text.content_type == "text/plain"
    if "setting" in details:
        assert details["setting"].split(" + ")[0] in text.text
    assert leftovers(upload_dir) == []


def test_type_refusal_lists_what_is_accepted(upapp: Callable[..., webtest.TestApp], upload_dir: Path) -> None:
    client = upapp(**{"sessup.upload.allowed_extensions": "png txt", "sessup.upload.allowed_types": "image/* text/*"})
    res = post(client, body(part("inputFile", b"<?php", filename="x.php")))
    assert res.status_int == 415
    assert {k: res.json[k] for k in ("code", "filename", "extension", "allowed_extensions", "allowed_types")} == {
        "code": "type_not_allowed", "filename": "x.php", "extension": "php",
        "allowed_extensions": ["png", "txt"], "allowed_types": ["image/*", "text/*"]}
    client = upapp(**{"sessup.upload.allowed_types": "image/*"})
    res = post(client, body(part("inputFile", b"%PDF", filename="doc.pdf")))
    assert (res.json["code"], res.json["content_type"]) == ("type_not_allowed", "application/pdf")


def test_not_multipart(upapp: Callable[..., webtest.TestApp]) -> None:
    res = post(upapp(), b"a=b", content_type="application/x-www-form-urlencoded")
    assert (res.status_int, res.json["code"]) == (415, "not_multipart")


def test_json_answer_names_each_field_for_what_it_is(upapp: Callable[..., webtest.TestApp],
                                                      upload_dir: Path) -> None:
    res = post(upapp(), body(part("inputFile", b"hello", filename="hello.txt")))
    [info] = res.json["files"]
    assert set(info) == {"field", "filename", "stored_name", "url", "size", "sha256", "content_type"}
    # stored_name: the name in the upload directory; url: where to get it (the text answer's echo).
    assert (upload_dir / info["stored_name"]).read_bytes() == b"hello"
    assert info["url"] == "/uploads/" + info["stored_name"]
    echo = upapp().post("/upFile", upload_files=[("inputFile", "e.txt", b"e")])
    assert echo.text.startswith("/uploads/") and "path" not in info


@pytest.mark.parametrize("header", [True, False], ids=["header", "field"])
def test_missing_token_says_how_to_get_one(upapp: Callable[..., webtest.TestApp], upload_dir: Path,
                                           header: bool) -> None:
    client = upapp(**{"sessup.upload.require_csrf": "true"})
    headers = {"X-CSRF-Token": ""} if header else {}
    data = body(part("inputFile", b"x", filename="a.txt"))
    text = client.request("/upFile", method="POST", body=data, content_type=MULTIPART, status=403, headers=headers)
    assert "GET /csrf" in text.text and "X-CSRF-Token" in text.text and "keep its cookies" in text.text
    res = post(client, data, **headers)
    assert res.status_int == 403 and res.json["code"] == "csrf_token_missing" and "GET /csrf" in res.json["error"]
    assert leftovers(upload_dir) == []
