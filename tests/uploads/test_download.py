"""GET/HEAD /uploads/{name}: nothing served can act as a page of the site.

Tests that take ``backend`` run on the upload directory and on object storage
(streamed from the bucket)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import webtest

from .conftest import Backend, body, part


def upload(client: webtest.TestApp, filename: str, data: bytes) -> str:
    res = client.request("/upFile", method="POST", body=body(part("inputFile", data, filename=filename)),
                         content_type="multipart/form-data; boundary=----sessupBoundary7MA4YWxkTrZu0gW")
    assert res.status_int == 200, res.text
    return res.text


HTML = b"<!doctype html><script>alert(document.cookie)</script>"


@pytest.mark.parametrize("filename", ["page.html", "page.htm", "img.svg", "x.xhtml", "x.xml", "x.js", "noext",
                                      "x.php", "evil.png.html"])
def test_active_content_is_an_attachment(client: webtest.TestApp, backend: Backend, filename: str) -> None:
    url = upload(client, filename, HTML)
    res = client.get(url)
    assert res.body == HTML
    assert res.headers["Content-Type"] == "application/octet-stream"
    assert res.headers["Content-Disposition"].startswith("attachment;")
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert res.headers["Content-Security-Policy"] == "sandbox"
    assert "html" not in res.headers["Content-Type"]


@pytest.mark.parametrize("filename, media_type", [("a.png", "image/png"), ("a.jpg", "image/jpeg"),
                                                  ("a.gif", "image/gif"), ("a.webp", "image/webp"),
                                                  ("a.pdf", "application/pdf"), ("a.txt", "text/plain")])
def test_inline_safe_types(client: webtest.TestApp, backend: Backend, filename: str, media_type: str) -> None:
    res = client.get(upload(client, filename, b"data"))
    assert res.content_type == media_type
    assert res.headers["Content-Disposition"] == f'inline; filename="{filename}"'
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert res.headers["Content-Security-Policy"] == "sandbox"


def test_original_name_in_filename_star(client: webtest.TestApp, backend: Backend) -> None:
    res = client.get(upload(client, "\u65e5\u672c %22q%22.zip", b"PK"))  # browsers send " as %22
    assert res.headers["Content-Disposition"] == (
        "attachment; filename=\"__ _q_.zip\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%20%22q%22.zip")


def test_range_requests(client: webtest.TestApp, backend: Backend) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    url = upload(client, "r.bin", data)
    res = client.get(url, headers={"Range": "bytes=1000-1999"}, status=206)
    assert res.body == data[1000:2000]
    assert res.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert client.get(url, headers={"Range": "bytes=-10"}, status=206).body == data[-10:]
    assert client.get(url, headers={"Range": "bytes=1048000-"}, status=206).body == data[1048000:]
    res = client.get(url, headers={"Range": "bytes=5000000-"}, status=416)
    assert client.get(url).headers["Accept-Ranges"] == "bytes"


def test_conditional_get(client: webtest.TestApp, backend: Backend) -> None:
    url = upload(client, "c.txt", b"cached")
    first = client.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert client.get(url, headers={"If-None-Match": etag}, status=304).body == b""
    assert client.get(url, headers={"If-Modified-Since": modified}, status=304).body == b""
    assert client.get(url, headers={"If-None-Match": '"other"'}, status=200).body == b"cached"
    assert client.get(url, headers={"If-Range": '"other"', "Range": "bytes=0-1"}, status=200).body == b"cached"
    assert client.get(url, headers={"If-Range": etag, "Range": "bytes=0-1"}, status=206).body == b"ca"


def test_rfc9110_suffix_range_of_zero_and_if_none_match_star(client: webtest.TestApp, backend: Backend) -> None:
    data = b"0123456789"
    url = upload(client, "z.bin", data)
    etag = client.get(url).headers["ETag"]
    # bytes=-0 is unsatisfiable (RFC 9110 14.1.1): 416 naming the size, not the whole file as 206.
    res = client.get(url, headers={"Range": "bytes=-0"}, status=416)
    assert res.headers["Content-Range"] == f"bytes */{len(data)}" and data not in res.body
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get(url, headers={"Range": "bytes= -000 "}, status=416).headers["Content-Range"] == "bytes */10"
    # ...unless If-Range does not match: then Range is ignored and the whole file sent.
    assert client.get(url, headers={"Range": "bytes=-0", "If-Range": '"other"'}, status=200).body == data
    # If-None-Match: * matches any current representation (13.1.2): 304 for GET and HEAD.
    not_modified = client.get(url, headers={"If-None-Match": "*"}, status=304)
    assert not_modified.body == b"" and not_modified.headers["ETag"] == etag
    assert client.head(url, headers={"If-None-Match": "*"}, status=304).body == b""
    assert client.get(url, headers={"If-None-Match": "*", "Range": "bytes=0-1"}, status=304).body == b""
    # Several ranges are not supported: ignored, whole file (14.2 allows it).
    assert client.get(url, headers={"Range": "bytes=0-1,4-5"}, status=200).body == data
    assert client.get(url, headers={"Range": "bytes=-0,0-1"}, status=200).body == data
    # Range has no meaning for HEAD (14.2): 200 with the full length.
    head = client.head(url, headers={"Range": "bytes=0-1"}, status=200)
    assert head.headers["Content-Length"] == "10" and "Content-Range" not in head.headers
    assert client.get(url + "x", headers={"If-None-Match": "*"}, status=404)
    assert client.get(url, headers={"Range": "bytes=2-3"}, status=206).body == b"23"


def test_head(client: webtest.TestApp, backend: Backend) -> None:
    url = upload(client, "h.txt", b"12345")
    res = client.head(url)
    assert res.body == b"" and res.headers["Content-Length"] == "5"


@pytest.mark.parametrize("name", ["nope", "A" * 32, "A" * 32 + ".txt", "..%2F..%2Fetc%2Fpasswd", "%2e%2e",
                                  ".tmp", ".meta", "A" * 40, "x%00.txt", "A" * 32 + ".TXT"])
def test_unknown_or_malformed_names_are_404(client: webtest.TestApp, backend: Backend, name: str) -> None:
    res = client.get("/uploads/" + name, status=404)
    assert "root:" not in res.text  # names with a (decoded) slash do not even reach the view


def test_temp_and_meta_files_are_not_served(client: webtest.TestApp, upload_dir: Path) -> None:
    url = upload(client, "m.txt", b"x")
    name = url.rsplit("/", 1)[1]
    client.get(f"/uploads/.meta/{name}.json", status=404)
    client.get(f"/uploads/{name}.json", status=404)
    (upload_dir / ".tmp" / ("B" * 32 + ".part")).write_bytes(b"partial")
    client.get("/uploads/" + "B" * 32 + ".part", status=404)


def test_symlink_in_upload_dir_is_not_followed(client: webtest.TestApp, upload_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"top secret")
    os.symlink(secret, upload_dir / ("S" * 32 + ".txt"))
    client.get("/uploads/" + "S" * 32 + ".txt", status=404)


def test_url_prefix_setting(upapp: Callable[..., webtest.TestApp], backend: Backend) -> None:
    client = upapp(**{"sessup.upload.url_prefix": "/files/"})
    url = upload(client, "p.txt", b"prefixed")
    assert url.startswith("/files/")
    assert client.get(url).body == b"prefixed"


def test_download_does_not_leak_descriptors(client: webtest.TestApp, backend: Backend) -> None:
    url = upload(client, "fd.txt", b"x" * 1000)
    etag = client.get(url).headers["ETag"]
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        client.get(url)
        client.head(url)
        client.get(url, headers={"If-None-Match": etag}, status=304)
        client.get(url, headers={"Range": "bytes=10-20"}, status=206)
        client.get(url, headers={"Range": "bytes=5000-"}, status=416)
    assert len(os.listdir("/proc/self/fd")) == before
