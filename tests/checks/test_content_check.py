"""The content check: a file must be what its extension says (libmagic on the
first bytes), on every upload path, before anything is stored."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from pyramid_sessup.uploads import names, verify
from pyramid_sessup.uploads.pipeline import StoredFile

from .. import samples
from .conftest import PATHS, everything, refused_message, stored

#: Every extension of the sample set, allow-listed.
ALL_EXTENSIONS = " ".join(sorted({names.extension_of(n) for n in [*samples.GOOD, *samples.BAD]}))


def check(tmp_path: Path, filename: str, data: bytes) -> str | None:
    """The content check's verdict on one file: None, or its 415 message."""
    path = tmp_path / "f.part"
    path.write_bytes(data)
    f = StoredFile(field="f", filename=filename, content_type=names.guess_type(names.extension_of(filename)),
                   size=len(data), sha256="", temp_path=str(path))
    try:
        verify.check_content(f)
    except Exception as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("filename", list(samples.GOOD))
def test_real_files_pass_under_their_own_name(tmp_path: Path, filename: str) -> None:
    assert check(tmp_path, filename, samples.GOOD[filename]) is None


@pytest.mark.parametrize("filename", list(samples.BAD))
def test_files_that_are_not_what_their_name_says_are_refused(tmp_path: Path, filename: str) -> None:
    message = check(tmp_path, filename, samples.BAD[filename])
    assert message is not None and repr(filename) in message and "nothing was stored" in message


def test_text_cut_inside_a_character_at_the_head_boundary_is_still_text(tmp_path: Path) -> None:
    # A 3-byte character straddles the last byte the check reads.
    data = b"a" * (verify.HEAD_BYTES - 1) + "€ and more".encode() * 10
    assert check(tmp_path, "long.txt", data) is None
    utf16 = "\ufeff".encode("utf-16-le") + ("x" * (verify.HEAD_BYTES // 2) + "\U0001f600" * 50).encode("utf-16-le")
    assert check(tmp_path, "long16.txt", utf16) is None


@pytest.mark.parametrize("path", PATHS)
def test_a_png_that_is_not_a_png_is_415_naming_the_file_and_nothing_is_stored(
        visitor: Any, upload_dir: Path, path: str, caplog: pytest.LogCaptureFixture) -> None:
    client = visitor(**{"sessup.upload.allowed_extensions": "png txt"})
    caplog.set_level(logging.WARNING, "pyramid_sessup.uploads")
    res = client.upload(path, "photo.png", samples.HTML)
    assert res.status_int == 415, res.text
    assert "photo.png" in refused_message(res) and "text/html" in refused_message(res)
    assert stored(upload_dir) == [] and everything(upload_dir) == []
    assert any("photo.png" in r.getMessage() for r in caplog.records)
    # The real thing goes through the same path.
    ok = client.upload(path, "photo.png", samples.png())
    assert ok.status_int in (200, 204), ok.text
    data = [(upload_dir / n).read_bytes() for n in stored(upload_dir)]
    assert data == [samples.png()]


@pytest.mark.parametrize("path", PATHS)
def test_text_types_are_checked_too(visitor: Any, upload_dir: Path, path: str) -> None:
    client = visitor(**{"sessup.upload.allowed_types": "text/*"})
    res = client.upload(path, "notes.txt", samples.gif())
    assert res.status_int == 415 and "notes.txt" in refused_message(res)
    assert everything(upload_dir) == []
    assert client.upload(path, "notes.txt", samples.TEXT).status_int in (200, 204)


def test_every_sample_through_upfile(visitor: Any, upload_dir: Path) -> None:
    client = visitor(**{"sessup.upload.allowed_extensions": ALL_EXTENSIONS, "sessup.upload.max_files": "50"})
    for name, data in samples.BAD.items():
        res = client.upfile([(name, data)])
        assert res.status_int == 415 and name in res.json["error"], (name, res.text)
    assert everything(upload_dir) == []
    res = client.upfile(list(samples.GOOD.items()))
    assert res.status_int == 200, res.text
    by_name = {f["filename"]: f for f in res.json["files"]}
    for name, data in samples.GOOD.items():
        assert by_name[name]["sha256"] == hashlib.sha256(data).hexdigest()
        assert (upload_dir / by_name[name]["path"]).read_bytes() == data


def test_one_bad_file_among_good_ones_stores_none(visitor: Any, upload_dir: Path) -> None:
    client = visitor(**{"sessup.upload.allowed_extensions": "png jpg pdf"})
    res = client.upfile([("a.png", samples.png()), ("b.jpg", samples.jpeg()), ("c.pdf", samples.HTML)])
    assert res.status_int == 415 and "c.pdf" in res.json["error"]
    assert everything(upload_dir) == []


def test_modes(visitor: Any, upload_dir: Path) -> None:
    # auto: only with an allow-list; off: never; always: even without one.
    assert visitor().upfile([("a.png", samples.HTML)]).status_int == 200
    off = visitor(**{"sessup.upload.allowed_extensions": "png", "sessup.upload.content_check": "off"})
    assert off.upfile([("b.png", samples.HTML)]).status_int == 200
    always = visitor(**{"sessup.upload.content_check": "always"})
    assert always.upfile([("c.png", samples.HTML)]).status_int == 415
    assert always.upfile([("d.png", samples.png())]).status_int == 200
    # An extension without a known type claims nothing and is not compared.
    assert always.upfile([("e.weird", samples.HTML)]).status_int == 200
    assert len(stored(upload_dir)) == 4


def test_form_keeps_the_good_files_and_drops_the_refused_one(visitor: Any, upload_dir: Path) -> None:
    client = visitor(**{"sessup.upload.allowed_extensions": "png txt"})
    res = client.form([("good.png", samples.png()), ("bad.png", samples.TEXT)])
    assert res.status_int == 415 and "bad.png" in refused_message(res)
    assert stored(upload_dir) == []
    # The refused file's bytes are gone at once; the good one waits in the temp store.
    temps = [p.read_bytes() for p in (upload_dir / ".tmp").iterdir()]
    assert temps == [samples.png()]


def test_tus_refusal_removes_the_upload(visitor: Any, upload_dir: Path) -> None:
    client = visitor(**{"sessup.upload.allowed_extensions": "png"})
    res = client.tus_create(len(samples.HTML), "x.png")
    location = res.headers["Location"].replace("http://example.com", "")
    half = len(samples.HTML) // 2
    headers = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream", "Host": "example.com"}
    assert client.app.request(location, method="PATCH", body=samples.HTML[:half], status="*",
                              headers={**headers, "Upload-Offset": "0"}).status_int == 204
    last = client.app.request(location, method="PATCH", body=samples.HTML[half:], status="*",
                              headers={**headers, "Upload-Offset": str(half)})
    assert last.status_int == 415 and "x.png" in last.text
    assert client.app.request(location, method="HEAD", headers={"Tus-Resumable": "1.0.0", "Host": "example.com"},
                              status="*").status_int == 404
    assert everything(upload_dir) == []
    # creation-with-upload and an empty upload are checked the same way
    assert client.tus_create(len(samples.HTML), "y.png", samples.HTML).status_int == 415
    assert client.tus_create(0, "empty.png").status_int == 415
    assert everything(upload_dir) == []
