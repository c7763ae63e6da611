"""Anonymous traffic stores nothing, in every store: 1,000 cookieless requests
to the pages, the CSRF endpoint, tus creation and refused uploads, plus full
upload flows that need the token, leave the store exactly as it was (its own
count and everything physically in it), set no session cookie, and every
upload still works.  Only putting data in the session writes a record."""
from __future__ import annotations

import re
from itertools import cycle
from pathlib import Path
from typing import Callable

import webtest

from .backends import raw_count

TUS = {"Tus-Resumable": "1.0.0"}
TOTAL = 1000


def new_visitor(client: webtest.TestApp) -> webtest.TestApp:
    """A browser of its own (cookie jar) on the same application."""
    return webtest.TestApp(client.app, extra_environ={"HTTP_HOST": "example.com"})


def cookies_set(res: webtest.TestResponse) -> set[str]:
    return {header.split("=", 1)[0] for header in res.headers.getall("Set-Cookie")}


class Mix:
    """The requests of the mix; each returns the responses it got."""

    def __init__(self, client: webtest.TestApp, upload_dir: Path) -> None:
        self.client = client
        self.upload_dir = upload_dir
        self.uploads = 0

    def csrf(self) -> list[webtest.TestResponse]:
        res = new_visitor(self.client).get("/csrf")
        assert res.headers["Cache-Control"] == "no-store"
        return [res]

    def page(self, url: str) -> Callable[[], list[webtest.TestResponse]]:
        def get() -> list[webtest.TestResponse]:
            return [new_visitor(self.client).get(url)]
        return get

    def tus_create(self) -> list[webtest.TestResponse]:
        return [new_visitor(self.client).post("/files/", headers={**TUS, "Upload-Length": "10"}, status=201)]

    def refused_upload(self) -> list[webtest.TestResponse]:
        res = new_visitor(self.client).post("/upFile", upload_files=[("inputFile", "a.txt", b"x")], status=403)
        return [res]

    def upfile_with_token(self) -> list[webtest.TestResponse]:
        visitor = new_visitor(self.client)
        first = visitor.get("/csrf")
        res = visitor.post("/upFile", upload_files=[("inputFile", "a.txt", b"hello")],
                           headers={"X-CSRF-Token": first.json["csrf_token"]})
        assert res.text.startswith("/uploads/")
        assert visitor.get(res.text).body == b"hello"
        self.uploads += 1
        return [first, res]

    def form_upload(self) -> list[webtest.TestResponse]:
        visitor = new_visitor(self.client)
        page = visitor.get("/upload")
        token = page.forms["upload-form"]["csrf_token"].value
        res = visitor.post("/upload", [("csrf_token", token), ("description", "mixed")],
                           upload_files=[("inputFile", "b.txt", b"form data")], status=303)
        res = res.follow()  # the result page (its data rides in the URL: no session)
        assert re.search(r'<a class="file-link" href="/uploads/[^"]+"', res.text), res.text[-2000:]
        self.uploads += 1
        return [page, res]

    def tus_upload(self) -> list[webtest.TestResponse]:
        visitor = new_visitor(self.client)
        created = visitor.post("/files/", headers={**TUS, "Upload-Length": "5"}, status=201)
        location = created.headers["Location"].replace("http://example.com", "")
        done = visitor.patch(location, b"12345", headers={**TUS, "Upload-Offset": "0",
                                                          "Content-Type": "application/offset+octet-stream"},
                             status=204)
        assert visitor.get(done.headers["Sessup-File-Url"]).body == b"12345"
        self.uploads += 1
        return [created, done]


def test_a_thousand_anonymous_requests_store_nothing(make_client: Callable[..., webtest.TestApp],
                                                     upload_dir: Path) -> None:
    client = make_client()
    store = client.app.registry.sessup_store
    # One real session first, so the counts below are not trivially zero.
    assert client.get("/session").json == {"views": 1}
    before, raw_before = store.count(), raw_count(store)
    assert before == 1

    mix = Mix(client, upload_dir)
    plan = cycle([mix.csrf, mix.page("/session/page"), mix.page("/upload"), mix.page("/ajax"), mix.tus_create,
                  mix.refused_upload, mix.csrf, mix.page("/session/info"), mix.refused_upload, mix.upfile_with_token,
                  mix.form_upload, mix.tus_upload])
    sent = 0
    cookies: set[str] = set()
    while sent < TOTAL:
        for res in next(plan)():
            sent += 1
            cookies |= cookies_set(res)
            assert res.status_int < 500
    assert mix.uploads >= 3 * TOTAL // 18  # the flows that need the token worked all along

    assert "sessup" not in cookies  # no session cookie, ever
    assert cookies == {"sessup_csrf"}
    assert store.count() == before
    assert raw_count(store) == raw_before
    # The count does see a write: putting data in the session stores one record.
    assert new_visitor(client).get("/session").json == {"views": 1}
    assert store.count() == before + 1
