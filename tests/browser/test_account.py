"""The account pages in Chromium: two browser contexts are two devices of one
user; signing out everywhere else from one signs the other out."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import start_app

pytestmark = [pytest.mark.browser, pytest.mark.server]

#: Device B's browser says it is Firefox on Windows, so the two rows differ by device too.
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"

TEXTS = {
    "en-US": {
        "sign_in": "Sign in", "not_passwords": "demonstrates sessions, not passwords",
        "sessions": "Your sessions", "this_one": "this one", "signed_in_as": "Signed in as alice.",
        "device_a": " on Linux", "device_b": "Firefox 128 on Windows",
        "signed_out_others": "Signed out 1 other session.", "sign_out_everywhere": "Sign out everywhere else",
    },
    "zh-CN": {
        "sign_in": "登录", "not_passwords": "演示的是会话，而不是密码",
        "sessions": "您的会话", "this_one": "当前会话", "signed_in_as": "已登录为 alice。",
        "device_a": "Linux 上的 Chrome", "device_b": "Windows 上的 Firefox 128",
        "signed_out_others": "已退出其他 1 个会话。", "sign_out_everywhere": "退出其他所有会话",
    },
}


def sign_in(page: Any, user: str, texts: dict[str, str]) -> None:
    page.goto("/account/sign-in")
    assert page.locator("h1").inner_text() == texts["sign_in"]
    assert texts["not_passwords"] in page.locator("#no-passwords").inner_text()
    page.fill("#user", user)
    page.click("#sign-in")
    page.wait_for_url("**/account/sessions")
    assert page.locator("h1").inner_text() == texts["sessions"]
    assert page.locator("div.flash").all_inner_texts() == [texts["signed_in_as"]]


def devices_listed(page: Any) -> list[tuple[str, bool]]:
    """(device cell without its badge, whether marked "this one") for each row."""
    return page.locator("#sessions tbody tr.session-row").evaluate_all("""rows => rows.map(row => {
        const cell = row.querySelector('td.device').cloneNode(true);
        const badge = cell.querySelector('.this-one');
        if (badge) badge.remove();
        return [cell.textContent.trim(), !!row.querySelector('.this-one')];
    })""")


# English over the memory store, Chinese over the file store (development.ini's).
@pytest.mark.parametrize("locale, store", [("en-US", "memory"), ("zh-CN", "file")])
def test_sign_out_everywhere_signs_the_other_device_out(tmp_path: Path, browser: Any, locale: str,
                                                        store: str) -> None:
    texts = TEXTS[locale]
    server, app = start_app(tmp_path, browser, {"sessup.session.store": store,
                                                "sessup.session.file.path": str(tmp_path / "sessions")},
                            locale=locale)
    other = browser.new_context(base_url=server.url, locale=locale, user_agent=FIREFOX)
    try:
        a, b = app.new_page(), other.new_page()
        sign_in(a, "alice", texts)
        sign_in(b, "alice", texts)
        if store == "file":  # the server really keeps its sessions there
            assert any((tmp_path / "sessions").iterdir())
        for page, mine, theirs in ((a, texts["device_a"], texts["device_b"]), (b, texts["device_b"], texts["device_a"])):
            page.goto("/account/sessions")
            listed = devices_listed(page)
            assert len(listed) == 2
            assert [current for _, current in listed].count(True) == 1
            own = next(device for device, current in listed if current)
            other_row = next(device for device, current in listed if not current)
            assert mine in own and theirs in other_row
            current = page.locator("tr.session-row.current")
            assert current.locator(".this-one").inner_text() == texts["this_one"]
            assert current.locator("button.revoke").count() == 0
            assert page.locator("tr.session-row:not(.current) button.revoke").count() == 1
        assert a.locator("#sign-out-everywhere").inner_text() == texts["sign_out_everywhere"]
        a.click("#sign-out-everywhere")
        a.wait_for_url("**/account/sessions")
        assert a.locator("div.flash").all_inner_texts() == [texts["signed_out_others"]]
        assert [current for _, current in devices_listed(a)] == [True]
        # B's next page load finds it signed out: sent to sign in.
        b.goto("/account/sessions")
        b.wait_for_url("**/account/sign-in")
        assert b.locator("h1").inner_text() == texts["sign_in"]
        assert b.locator("#signed-in-as").count() == 0
        # A is still signed in, alone.
        a.reload()
        assert a.url.endswith("/account/sessions")
        listed = devices_listed(a)
        assert len(listed) == 1 and listed[0][1] and texts["device_a"] in listed[0][0]
    finally:
        other.close()
        app.context.close()
        server.stop()
