"""sessup.upload.verifiers (the host's checks on still-temporary files) and the
UploadStored event (after the files are stored), on every upload path."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.exceptions import ConfigurationError

from pyramid_sessup.demo import main

from .. import samples
from . import hooks
from .conftest import PATHS, Paths, everything, refused_message, stored

JS_PDF = samples.pdf().replace(b"/Type /Catalog", b"/Type /Catalog /OpenAction << /S /JavaScript /JS (app.alert(1)) >>")


@pytest.fixture
def host(settings: dict[str, Any]) -> Any:
    """``host(**settings)``: a client of a host app subscribed to UploadStored."""
    hooks.SEEN.clear()

    def make(**overrides: Any) -> Paths:
        app = hooks.main({}, **{**settings, **overrides})
        return Paths(webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"}))

    yield make
    hooks.SEEN.clear()


VERIFIERS = "tests.checks.hooks:record tests.checks.hooks.no_pdf_javascript"


@pytest.mark.parametrize("path", PATHS)
def test_verifier_refuses_and_nothing_is_stored_nor_announced(host: Any, upload_dir: Path, path: str) -> None:
    client = host(**{"sessup.upload.verifiers": VERIFIERS})
    res = client.upload(path, "invoice.pdf", JS_PDF)
    assert res.status_int == 422, res.text
    assert "invoice.pdf" in refused_message(res) and "JavaScript" in refused_message(res)
    assert everything(upload_dir) == []
    kinds = [kind for kind, _ in hooks.SEEN]
    assert kinds == ["verify"]  # the verifier saw it; no UploadStored for a refused upload
    filename, existed, name, _ = hooks.SEEN[0][1]
    assert filename == "invoice.pdf" and existed and name == ""


@pytest.mark.parametrize("path", PATHS)
def test_event_after_commit_with_the_stored_files(host: Any, upload_dir: Path, path: str) -> None:
    client = host(**{"sessup.upload.verifiers": VERIFIERS})
    data = samples.pdf()
    res = client.upload(path, "clean.pdf", data)
    assert res.status_int in (200, 204), res.text
    verified, announced = hooks.SEEN
    assert verified[0] == "verify" and announced[0] == "stored"
    request_path, files = announced[1]
    assert request_path.startswith({"upfile": "/upFile", "form": "/upload", "tus": "/files/"}[path])
    (filename, name, temp_path, sha), = files
    assert filename == "clean.pdf" and temp_path == "" and sha == hashlib.sha256(data).hexdigest()
    assert (upload_dir / name).read_bytes() == data  # stored before the event fired
    assert stored(upload_dir) == [name]


def test_event_once_per_request_with_every_file(host: Any, upload_dir: Path) -> None:
    client = host()
    assert client.upfile([("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"")]).status_int == 200
    (kind, (_, files)), = hooks.SEEN
    assert kind == "stored" and [f[0] for f in files] == ["a.txt", "b.txt", "c.txt"]
    assert sorted(f[1] for f in files) == stored(upload_dir)


def test_tus_zero_length_and_creation_with_upload_fire_too(host: Any, upload_dir: Path) -> None:
    client = host()
    assert client.tus_create(0, "empty.txt").status_int == 201
    assert client.tus_create(5, "five.txt", b"12345").status_int == 201
    assert [len(files) for kind, (_, files) in hooks.SEEN if kind == "stored"] == [1, 1]
    assert len(stored(upload_dir)) == 2


def test_every_verifier_sees_every_file_in_order(host: Any, upload_dir: Path) -> None:
    client = host(**{"sessup.upload.verifiers": "tests.checks.hooks:record tests.checks.hooks:record"})
    assert client.upfile([("1.txt", b"1"), ("2.txt", b"2")]).status_int == 200
    assert [seen[0] for kind, seen in hooks.SEEN if kind == "verify"] == ["1.txt", "2.txt", "1.txt", "2.txt"]


def test_a_verifier_that_crashes_stores_nothing(host: Any, upload_dir: Path) -> None:
    client = host(**{"sessup.upload.verifiers": "tests.checks.hooks:explode"})
    with pytest.raises(RuntimeError, match="a verifier with a bug"):
        client.upfile([("a.txt", b"a")])
    assert everything(upload_dir) == []


@pytest.mark.parametrize("value", ["tests.checks.hooks:nope", "no_such_module_x:f", "tests.checks.hooks:SEEN",
                                   "not a dotted name!"])
def test_unknown_verifier_stops_start_up_naming_the_key(settings: dict[str, Any], value: str) -> None:
    with pytest.raises(ConfigurationError, match="sessup.upload.verifiers"):
        main({}, **{**settings, "sessup.upload.verifiers": value})
