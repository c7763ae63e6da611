"""receive_upload / ParsedUpload as other views use them (forms, host apps)."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyramid.request import Request

from pyramid_sessup.csrf import CSRFConfig
from pyramid_sessup.exceptions import CSRFRefused, MalformedMultipart, UnsupportedMediaType, UploadTooLarge
from pyramid_sessup.settings import SessupSettings, parse_settings
from pyramid_sessup.uploads.pipeline import ANY_FIELD, ParsedUpload, UploadLimits, multipart_boundary, receive_upload
from pyramid_sessup.uploads.storage import UploadStorage

from .conftest import MULTIPART, body, leftovers, part


class Registry:
    def __init__(self, values: SessupSettings) -> None:
        self.sessup_settings = values

    def queryUtility(self, iface: Any, default: Any = None) -> Any:  # no CSRF policy registered
        return default

    def notify(self, *events: Any) -> None:  # no subscribers
        pass


def make_request(data: bytes, values: SessupSettings, **headers: str) -> Any:
    req = Request.blank("/form", method="POST", body=data, content_type=MULTIPART, headers=headers)
    req.registry = Registry(values)
    return req


@pytest.fixture
def values(settings: dict[str, Any]) -> dict[str, Any]:
    return parse_settings({**settings, "sessup.upload.require_csrf": "false"})


@pytest.fixture
def store(upload_dir: Path) -> UploadStorage:
    return UploadStorage(str(upload_dir))


def test_parsed_upload_api(values: SessupSettings, store: UploadStorage, upload_dir: Path) -> None:
    data = body(part("title", b"T"), part("tag", b"a"), part("tag", b"b"),
                part("photo", b"\x89PNG", filename="p.png"), part("doc", b"%PDF", filename="d.pdf"))
    parsed = receive_upload(make_request(data, values), file_fields={"photo", "doc"}, storage=store)
    assert isinstance(parsed, ParsedUpload)
    assert parsed.get("title") == "T" and parsed.get("tag") == "b" and parsed.get("nope", "x") == "x"
    assert parsed.getall("tag") == ["a", "b"]
    assert parsed.fields == [("title", "T"), ("tag", "a"), ("tag", "b")]
    photo, = parsed.files_of("photo")
    assert photo.name == "" and Path(photo.temp_path).parent == upload_dir / ".tmp"
    assert photo.sha256 == hashlib.sha256(b"\x89PNG").hexdigest() and photo.size == 4
    assert photo.content_type == "image/png" and photo.filename == "p.png"
    committed = parsed.commit()
    assert committed is parsed.files and parsed.commit() is parsed.files  # idempotent
    assert photo.temp_path == "" and (upload_dir / photo.name).read_bytes() == b"\x89PNG"
    assert store.metadata(photo.name)["filename"] == "p.png"


def test_discard_removes_every_temp(values: SessupSettings, store: UploadStorage, upload_dir: Path) -> None:
    data = body(part("inputFile", b"1", filename="a.txt"), part("inputFile", b"2", filename="b.txt"))
    parsed = receive_upload(make_request(data, values), storage=store)
    assert len(store.temp_files()) == 2
    parsed.discard()
    assert leftovers(upload_dir) == []


def test_limits_from_settings_and_overrides(values: SessupSettings, store: UploadStorage, upload_dir: Path) -> None:
    data = body(part("f", b"x" * 11, filename="a.txt"))
    with pytest.raises(UploadTooLarge, match="max_file_size"):
        receive_upload(make_request(data, values), limits=UploadLimits.from_values(values, max_file_size=10),
                       file_fields={ANY_FIELD}, storage=store)
    with pytest.raises(UnsupportedMediaType):
        strict = replace(values, upload=replace(values.upload, allowed_extensions=("png",)))
        receive_upload(make_request(data, values), limits=strict,
                       file_fields={ANY_FIELD}, storage=store)
    with pytest.raises(MalformedMultipart, match="Unexpected file field"):
        receive_upload(make_request(data, values), storage=store)
    assert leftovers(upload_dir) == []


class NoSession:
    """A session the CSRF check must never touch (it needs no stored session)."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the CSRF check used request.session.{name}")


def test_csrf_checks_the_visitor_token_and_never_the_session(values: SessupSettings, store: UploadStorage) -> None:
    config = CSRFConfig.from_values(values)
    nonce, other = "N" * 43, "O" * 43
    cookie = {"Cookie": f"{config.cookie_name}={nonce}"}
    token = config.token(nonce)

    def attempt(fields: list[bytes], **headers: str) -> bool:
        req = make_request(body(*fields, part("inputFile", b"x", filename="a.txt")), values, **headers)
        req.session = NoSession()
        try:
            receive_upload(req, csrf=True, storage=store)
        except CSRFRefused:
            return False
        return True

    assert attempt([part("csrf_token", token.encode())], **cookie)
    assert attempt([], **cookie, **{"X-CSRF-Token": token})
    assert not attempt([part("csrf_token", token.encode())], **cookie, **{"X-CSRF-Token": "bad"})
    assert not attempt([part("csrf_token", "t\u00f6k".encode())], **cookie)
    assert not attempt([part("csrf_token", token.encode())])  # no nonce cookie
    assert not attempt([part("csrf_token", config.token(other).encode())], **cookie)  # another visitor's token
    assert len(store.temp_files()) == 2  # only the accepted, uncommitted uploads


@pytest.mark.parametrize("content_type, error", [
    ("multipart/form-data; boundary=abc", None),
    ('multipart/form-data; boundary="a b:c"', None),
    ("Multipart/Form-Data; charset=utf-8; boundary=x", None),
    ("multipart/form-data", MalformedMultipart),
    ("multipart/form-data; boundary=", MalformedMultipart),
    ("multipart/form-data; boundary=" + "x" * 71, MalformedMultipart),
    ('multipart/form-data; boundary="trailing "', MalformedMultipart),
    ("multipart/form-data; boundary=a\u00e9", MalformedMultipart),
    ("text/plain", UnsupportedMediaType),
    ("", UnsupportedMediaType),
    (None, UnsupportedMediaType),
])
def test_multipart_boundary(content_type: str | None, error: type | None) -> None:
    if error is None:
        assert multipart_boundary(content_type)
    else:
        with pytest.raises(error):
            multipart_boundary(content_type)


def test_fsync_setting(upapp: Any, upload_dir: Path) -> None:
    client = upapp(**{"sessup.upload.fsync": "true"})
    res = client.post("/upFile", upload_files=[("inputFile", "f.txt", b"durable")])
    assert (upload_dir / res.text.rsplit("/", 1)[1]).read_bytes() == b"durable"
