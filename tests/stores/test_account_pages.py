"""The demo's account pages over every store: two browsers of one user, then
revoke, sign out everywhere else and sign out; anonymous visits store nothing."""
from __future__ import annotations

from typing import Callable

import webtest

from ..accounts import CHROME, FIREFOX, IPHONE, Device, flash, rows, token_of
from .backends import raw_count


def test_account_pages_over_the_store(make_client: Callable[..., webtest.TestApp]) -> None:
    app = make_client().app
    laptop, phone, tablet, bob = Device(app, FIREFOX), Device(app, IPHONE), Device(app, CHROME), Device(app, CHROME)
    for device in (laptop, phone, tablet):
        device.sign_in("alice")
    bob.sign_in("bob")
    page = laptop.sessions()
    assert sorted((r.device, r.current) for r in rows(page)) == [
        ("Chrome 131 on Windows", False), ("Firefox 128 on Linux", True), ("Safari 17 on iPhone", False)]
    phone_row = next(r for r in rows(page) if r.device == "Safari 17 on iPhone")
    after = laptop.press("/account/sessions/revoke", page, handle=phone_row.handle)
    assert flash(after) == ["That session was signed out."]
    assert phone.signed_out() and not tablet.signed_out()
    after = laptop.press("/account/sign-out-everywhere", after)
    assert flash(after) == ["Signed out 1 other session."]
    assert [(r.device, r.current) for r in rows(after)] == [("Firefox 128 on Linux", True)]
    assert tablet.signed_out() and not laptop.signed_out() and not bob.signed_out()
    res = laptop.client.post("/account/sign-out", {"csrf_token": after.forms[0]["csrf_token"].value},
                             status=303)
    assert flash(res.follow()) == ["You are signed out."]
    assert laptop.signed_out() and not bob.signed_out()


def test_anonymous_visits_to_the_account_pages_store_nothing(make_client: Callable[..., webtest.TestApp]) -> None:
    app = make_client().app
    store = app.registry.sessup_store
    before, raw_before = store.count(), raw_count(store)
    for _ in range(20):
        visitor = Device(app)
        form = visitor.client.get("/account/sign-in")
        token = token_of(form)
        visitor.client.get("/account/sessions", status=303)
        visitor.client.post("/account/sign-in", {"csrf_token": token, "user": " "}, status=400)
        visitor.client.post("/account/sign-in", {"user": "alice"}, status=403)
        for path in ("/account/sessions/revoke", "/account/sign-out-everywhere", "/account/sign-out"):
            visitor.client.post(path, {"csrf_token": token, "handle": "x" * 22}, status=303)
        assert "sessup" not in visitor.client.cookies
    assert store.count() == before and raw_count(store) == raw_before
