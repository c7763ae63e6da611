"""A browser on the demo's account pages, for WebTest: its own cookies and
User-Agent over a shared application; the rows of ``/account/sessions``."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import webtest

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
ZH = {"Accept-Language": "zh-CN"}


def token_of(page: webtest.TestResponse) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def flash(page: webtest.TestResponse) -> list[str]:
    return [div.get_text(strip=True) for div in page.html.select("div.flash")]


@dataclass
class Row:
    device: str
    current: bool
    handle: str | None
    created: str
    last_seen: str


def rows(page: webtest.TestResponse) -> list[Row]:
    found = []
    for tr in page.html.select("#sessions tbody tr.session-row"):
        handle = tr.select_one("input[name=handle]")
        device = "".join(tr.select_one("td.device").find_all(string=True, recursive=False)).strip()
        found.append(Row(device=device, current=tr.select_one(".this-one") is not None,
                         handle=handle["value"] if handle is not None else None,
                         created=tr.select_one("td.created time").get_text(strip=True),
                         last_seen=tr.select_one("td.last-seen time").get_text(strip=True)))
    return found


class Device:
    """One browser: its own cookies and ``User-Agent``, on the shared application."""

    def __init__(self, app: Any, user_agent: str = FIREFOX, **environ: str) -> None:
        self.client = webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com",
                                                          "HTTP_USER_AGENT": user_agent, **environ})

    def sign_in(self, user: str, status: int | str = 303, **kw: Any) -> webtest.TestResponse:
        form = self.client.get("/account/sign-in", **kw)
        return self.client.post("/account/sign-in", {"csrf_token": token_of(form), "user": user}, status=status,
                                **kw)

    def sessions(self, **kw: Any) -> webtest.TestResponse:
        return self.client.get("/account/sessions", status=200, **kw)

    def signed_out(self) -> bool:
        """Whether the sessions page now sends this browser to sign in."""
        res = self.client.get("/account/sessions", status="*")
        return res.status_int == 303 and res.headers["Location"] == "/account/sign-in"

    def press(self, path: str, page: webtest.TestResponse, **fields: str) -> webtest.TestResponse:
        """A button of ``page`` (its CSRF token), then the page the redirect leads to."""
        res = self.client.post(path, {"csrf_token": token_of(page), **fields}, status=303)
        return res.follow()

    def cookie(self) -> str:
        return self.client.cookies["sessup"]
