"""Upload quotas per visitor over a rolling window (files and bytes), on every
upload path; the counting itself across processes is in test_quota_processes.py."""
from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any

import pytest
import webtest
from webob import Request

from pyramid_sessup.uploads.quota import SLICES, Quota, charge_fn
from pyramid_sessup.uploads.storage import UploadStorage

from .conftest import Paths, everything, refused_message, stored


def test_window_arithmetic() -> None:
    q = Quota(max_files=2, max_bytes=None, window=60)  # one-second slices
    data, verdict = charge_fn(q, 1, 10, now=1000.5)(None)
    assert verdict.ok and verdict.slot == 1000
    data, verdict = charge_fn(q, 1, 10, now=1030.2)(data)
    assert verdict.ok and verdict.used_files == 2
    _, refused = charge_fn(q, 1, 0, now=1059.9)(data)
    assert not refused.ok and refused.limit == "quota_files"
    assert refused.retry_after == pytest.approx(1060.0 - 1059.9)  # the first slice leaves the window at 1060
    _, again = charge_fn(q, 1, 0, now=1060.0)(data)
    assert again.ok and again.used_files == 2  # the one of 1030 and this one
    # Two files at once need both slices gone.
    _, both = charge_fn(q, 2, 0, now=1059.9)(data)
    assert not both.ok and both.retry_after == pytest.approx(1090.0 - 1059.9)
    # More than the whole quota can never fit.
    _, never = charge_fn(q, 3, 0, now=1000)(None)
    assert not never.ok and never.retry_after is None
    # A counter written under another window starts afresh.
    _, other = charge_fn(Quota(2, None, 120), 2, 0, now=1001)(data)
    assert other.ok
    assert len(charge_fn(q, 1, 1, now=5000)(None)[0]["s"]) == 1
    assert SLICES == 60


def limited(visitor: Any, **settings: str) -> Paths:
    return visitor(**{"sessup.upload.quota_window": "3600", **settings})


def test_files_quota_is_429_with_retry_after_naming_the_quota(visitor: Any, upload_dir: Path) -> None:
    client = limited(visitor, **{"sessup.upload.quota_files": "3"})
    assert client.upfile([("a.txt", b"a"), ("b.txt", b"b")]).status_int == 200
    assert client.upfile([("c.txt", b"c")]).status_int == 200
    res = client.upfile([("d.txt", b"d")])
    assert res.status_int == 429
    assert "sessup.upload.quota_files" in res.json["error"] and "3 files per 3600 s" in res.json["error"]
    assert 0 < int(res.headers["Retry-After"]) <= 3600 + 60
    assert len(stored(upload_dir)) == 3 and not (upload_dir / ".tmp").exists() or \
        list((upload_dir / ".tmp").iterdir()) == []


def test_bytes_quota_and_empty_files(visitor: Any, upload_dir: Path) -> None:
    client = limited(visitor, **{"sessup.upload.quota_bytes": "100"})
    assert client.upfile([("a.bin", b"x" * 60)]).status_int == 200
    assert client.upfile([("b.bin", b"x" * 40)]).status_int == 200
    res = client.upfile([("c.bin", b"x")])
    assert res.status_int == 429 and "sessup.upload.quota_bytes" in res.json["error"]
    assert client.upfile([("empty.bin", b"")]).status_int == 200  # 0 more bytes still fit
    # One request alone over the whole quota: waiting would not help, so 413.
    fresh = limited(visitor, **{"sessup.upload.quota_bytes": "100"})
    too_big = fresh.upfile([("big.bin", b"x" * 101)])
    assert too_big.status_int == 413 and "sessup.upload.quota_bytes" in too_big.json["error"]
    assert "Retry-After" not in too_big.headers
    assert len(stored(upload_dir)) == 3


def test_empty_files_count_as_files(visitor: Any, upload_dir: Path) -> None:
    client = limited(visitor, **{"sessup.upload.quota_files": "2"})
    assert client.upfile([("1", b"")]).status_int == 200
    assert client.tus_create(0, "2").status_int == 201
    assert client.upfile([("3", b"")]).status_int == 429
    assert client.tus_create(0, "4").status_int == 429
    assert len(stored(upload_dir)) == 2


def test_one_quota_for_all_three_paths(visitor: Any, upload_dir: Path) -> None:
    client = limited(visitor, **{"sessup.upload.quota_files": "3"})
    assert client.upload("upfile", "a.txt", b"a").status_int == 200
    assert client.upload("form", "b.txt", b"b").status_int == 200
    assert client.upload("tus", "c.txt", b"c").status_int == 204
    for path in ("upfile", "form", "tus"):
        res = client.upload(path, "d.txt", b"d")
        assert res.status_int == 429, (path, res.text)
        expected = "You have uploaded too much for now" if path == "form" else "sessup.upload.quota_files"
        assert expected in refused_message(res) and int(res.headers["Retry-After"]) > 0
    assert len(stored(upload_dir)) == 3
    assert not any(n.startswith(".tus/") and n.endswith(".part") for n in everything(upload_dir))


def test_anonymous_tus_creations_count_and_store_no_session(make_app: Any, upload_dir: Path) -> None:
    app = make_app(**{"sessup.upload.quota_files": "3"})
    results = []
    for _ in range(6):
        client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})  # no cookies
        res = client.request("/files/", method="POST", status="*",
                             headers={"Tus-Resumable": "1.0.0", "Upload-Length": "0"})
        results.append(res.status_int)
    assert results == [201, 201, 201, 429, 429, 429]
    assert len(stored(upload_dir)) == 3
    # No creation stored a session: an upload is owned by the visitor cookie.
    assert app.registry.sessup_store.count() == 0


def test_cookieless_uploads_are_counted_by_address_without_a_session(make_app: Any, upload_dir: Path) -> None:
    app = make_app(**{"sessup.upload.quota_files": "2", "sessup.upload.require_csrf": "false"})

    def post(addr: str) -> int:
        client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com", "REMOTE_ADDR": addr})
        return client.post("/upFile", upload_files=[("inputFile", "a.txt", b"a")], status="*").status_int

    assert [post("192.0.2.1") for _ in range(3)] == [200, 200, 429]
    assert post("192.0.2.2") == 200  # another address, another quota
    assert app.registry.sessup_store.count() == 0  # counting created no session


def test_each_session_has_its_own_quota(visitor: Any, make_app: Any, upload_dir: Path) -> None:
    app = make_app(**{"sessup.upload.quota_files": "1"})
    one = Paths(webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"}))
    two = Paths(webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"}))
    assert one.upfile([("a", b"1")]).status_int == 200
    assert one.upfile([("b", b"1")]).status_int == 429
    assert two.upfile([("c", b"2")]).status_int == 200


def test_quota_key_is_replaceable_for_a_user_binding(make_app: Any, upload_dir: Path) -> None:
    app = make_app(**{"sessup.upload.quota_files": "2", "sessup.upload.quota_key": "tests.checks.hooks:user_keys"})
    alice = [Paths(webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})) for _ in range(3)]
    # Three sessions of one user share the user's quota (and each has its own).
    assert alice[0].upfile([("a", b"1")], **{"X-Test-User": "alice"}).status_int == 200
    assert alice[1].upfile([("b", b"1")], **{"X-Test-User": "alice"}).status_int == 200
    res = alice[2].upfile([("c", b"1")], **{"X-Test-User": "alice"})
    assert res.status_int == 429
    # The refusal by the user key took back the charge on the session key: that
    # session can still upload as another user.
    assert alice[2].upfile([("d", b"1")], **{"X-Test-User": "bob"}).status_int == 200
    assert alice[2].upfile([("e", b"1")], **{"X-Test-User": "carol"}).status_int == 200
    assert alice[2].upfile([("f", b"1")], **{"X-Test-User": "dave"}).status_int == 429  # its session is full


def test_a_visitor_over_quota_is_refused_before_the_body_is_read(make_app: Any) -> None:
    app = make_app(**{"sessup.upload.quota_files": "1", "sessup.upload.require_csrf": "false"})
    client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com", "REMOTE_ADDR": "192.0.2.9"})
    assert client.post("/upFile", upload_files=[("inputFile", "a", b"1")]).status_int == 200

    class Unreadable(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:  # type: ignore[override]
            raise AssertionError("the body was read")

    req = Request.blank("/upFile", method="POST", environ={"REMOTE_ADDR": "192.0.2.9", "HTTP_HOST": "example.com"})
    req.environ["wsgi.input"] = Unreadable()
    req.environ["CONTENT_TYPE"] = "multipart/form-data; boundary=x"
    req.environ["CONTENT_LENGTH"] = str(10 * 1024 * 1024)
    res = req.get_response(app)
    assert res.status_int == 429


def test_a_failed_commit_gives_the_quota_back(visitor: Any, upload_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    client = limited(visitor, **{"sessup.upload.quota_files": "1"})

    def full(self: UploadStorage, *args: Any, **kw: Any) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(UploadStorage, "finalize", full)
        assert client.upfile([("a.txt", b"a")]).status_int == 507
    assert client.upfile([("b.txt", b"b")]).status_int == 200


def test_store_down_while_counting_is_503_and_stores_nothing(visitor: Any, upload_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pyramid_sessup.exceptions import StoreUnavailable
    from pyramid_sessup.stores.memory import MemoryStore

    client = limited(visitor, **{"sessup.upload.quota_files": "5"})
    token = client.token()  # the session exists before the counters become unreachable

    def down(*args: Any, **kw: Any) -> Any:
        raise StoreUnavailable("store down")

    monkeypatch.setattr(MemoryStore, "modify_counter", down)
    res = client.app.post("/upFile", upload_files=[("inputFile", "a.txt", b"a")], status="*",
                          headers={"X-CSRF-Token": token})
    assert res.status_int == 503 and res.headers["Retry-After"]
    assert everything(upload_dir) == []


def test_fresh_visitor_cookies_do_not_escape_the_address_total(make_app: Any, upload_dir: Path) -> None:
    """A client that sends a new random visitor cookie with every tus creation gets a
    fresh visitor quota each time, but the address it comes from is charged too, at
    quota_address_factor times the quota: 2 x 3 creations, then 429 naming the factor."""
    import secrets

    app = make_app(**{"sessup.upload.quota_files": "2", "sessup.upload.quota_address_factor": "3"})

    def create(addr: str) -> webtest.TestResponse:
        client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com", "REMOTE_ADDR": addr})
        return client.request("/files/", method="POST", status="*",
                              headers={"Tus-Resumable": "1.0.0", "Upload-Length": "0",
                                       "Cookie": "sessup_csrf=" + secrets.token_urlsafe(32)})

    results = [create("192.0.2.7").status_int for _ in range(9)]
    assert results == [201] * 6 + [429] * 3
    refused = create("192.0.2.7")
    assert "quota_address_factor" in refused.text and "from this address" in refused.text
    assert create("192.0.2.8").status_int == 201  # another address, another total
    assert len(stored(upload_dir)) == 7


def test_address_total_off_lets_each_visitor_cookie_count_alone(make_app: Any, upload_dir: Path) -> None:
    import secrets

    app = make_app(**{"sessup.upload.quota_files": "1", "sessup.upload.quota_address_factor": "0"})
    for _ in range(5):
        client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com", "REMOTE_ADDR": "192.0.2.7"})
        res = client.request("/files/", method="POST", status="*",
                             headers={"Tus-Resumable": "1.0.0", "Upload-Length": "0",
                                      "Cookie": "sessup_csrf=" + secrets.token_urlsafe(32)})
        assert res.status_int == 201


def test_signed_in_visitors_are_not_charged_to_the_address(make_app: Any, upload_dir: Path) -> None:
    """A signed-in user is an identity that cannot be minted for free: two users
    behind one address each get their quota; the anonymous total is left alone."""
    from ..accounts import Device

    app = make_app(**{"sessup.upload.quota_files": "1", "sessup.upload.quota_address_factor": "1"})

    def create(device: Device) -> int:
        token = device.client.get("/csrf").json["csrf_token"]
        return device.client.post("/upFile", upload_files=[("inputFile", "a.txt", b"a")], status="*",
                                  headers={"X-CSRF-Token": token}).status_int

    ann, bob = Device(app, REMOTE_ADDR="192.0.2.7"), Device(app, REMOTE_ADDR="192.0.2.7")
    ann.sign_in("ann")
    bob.sign_in("bob")
    assert [create(ann), create(bob)] == [200, 200]
    assert [create(ann), create(bob)] == [429, 429]  # each user's own session quota
    anonymous = [Device(app, REMOTE_ADDR="192.0.2.7") for _ in range(2)]
    assert [create(d) for d in anonymous] == [200, 429]  # the address total: 1 x 1
