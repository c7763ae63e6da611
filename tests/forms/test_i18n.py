"""Locale negotiation and the shipped catalogs."""
from __future__ import annotations

import gettext
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import webtest

from pyramid_sessup.forms import i18n

from ..support import unavailable

LOCALE = Path(i18n.__file__).resolve().parent.parent / "locale"


def h1(page: webtest.TestResponse) -> str:
    return re.search(r"<h1>(.*?)</h1>", page.text).group(1)


@pytest.mark.parametrize("header, expected", [
    ("zh-CN,zh;q=0.9,en;q=0.8", "会话与文件上传"),
    ("zh", "会话与文件上传"),
    ("zh-Hans-CN", "会话与文件上传"),
    ("en-US,en;q=0.9", "Sessions and file uploads"),
    ("fr-FR, zh;q=0.5", "会话与文件上传"),
    ("de, en;q=0.1, zh;q=0.5", "会话与文件上传"),
    ("fr", "Sessions and file uploads"),
    ("zh-TW", "Sessions and file uploads"),
    ("", "Sessions and file uploads"),
    ("*;q=garbage,,", "Sessions and file uploads"),
])
def test_accept_language(testapp: webtest.TestApp, header: str, expected: str) -> None:
    page = testapp.get("/", headers={"Accept-Language": header})
    assert h1(page) == expected


def test_switch_sets_cookie_that_wins_over_accept_language(testapp: webtest.TestApp) -> None:
    page = testapp.get("/?_LOCALE_=zh_CN", headers={"Accept-Language": "en"})
    assert h1(page) == "会话与文件上传"
    assert '<html lang="zh-CN">' in page.text
    assert any(c.startswith("_LOCALE_=zh_CN") for c in page.headers.getall("Set-Cookie"))
    assert h1(testapp.get("/", headers={"Accept-Language": "en"})) == "会话与文件上传"
    assert h1(testapp.get("/?_LOCALE_=en", headers={"Accept-Language": "zh"})) == "Sessions and file uploads"
    assert h1(testapp.get("/", headers={"Accept-Language": "zh"})) == "Sessions and file uploads"


def test_unknown_locale_values_are_ignored(testapp: webtest.TestApp) -> None:
    page = testapp.get("/?_LOCALE_=../../etc", headers={"Accept-Language": "en"})
    assert h1(page) == "Sessions and file uploads"
    assert not any(c.startswith("_LOCALE_") for c in page.headers.getall("Set-Cookie"))
    testapp.set_cookie("_LOCALE_", "xx")
    assert h1(testapp.get("/", headers={"Accept-Language": "zh"})) == "会话与文件上传"


def test_switch_links_keep_the_query(testapp: webtest.TestApp) -> None:
    page = testapp.get("/session/page?x=1")
    assert 'href="/session/page?x=1&amp;_LOCALE_=zh_CN"' in page.text


def _catalog(mo: Path) -> dict:
    with open(mo, "rb") as f:
        return dict(gettext.GNUTranslations(f)._catalog)  # type: ignore[attr-defined]


def _pot_ids() -> set[str]:
    text = (LOCALE / "pyramid_sessup.pot").read_text(encoding="utf-8")
    ids = set()
    for block in text.split("\n\n"):
        m = re.search(r'^msgid ((?:".*"\n?)+)', block, re.M)
        if m:
            ids.add("".join(re.findall(r'"(.*)"', m.group(1))).replace('\\"', '"'))
    ids.discard("")
    return ids


def test_chinese_catalog_translates_every_message() -> None:
    catalog = _catalog(LOCALE / "zh_CN" / "LC_MESSAGES" / "pyramid_sessup.mo")
    # A message with a plural form is under (msgid, 0): Chinese has one form.
    missing = [msgid for msgid in _pot_ids() if not (catalog.get(msgid) or catalog.get((msgid, 0)))]
    assert missing == []


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_mo_files_match_their_po(lang: str, tmp_path: Path) -> None:
    if shutil.which("msgfmt") is None:
        unavailable("msgfmt (gettext) is not installed")
    po = LOCALE / lang / "LC_MESSAGES" / "pyramid_sessup.po"
    subprocess.run(["msgfmt", "--check", "-o", str(tmp_path / "fresh.mo"), str(po)], check=True)
    assert _catalog(tmp_path / "fresh.mo") == _catalog(po.with_suffix(".mo"))


def test_colander_messages_follow_zh_cn() -> None:
    localizer = i18n.localizer_for("zh_CN", [str(LOCALE),
                                             str(Path(__import__("colander").__file__).parent / "locale"),
                                             str(Path(__import__("deform").__file__).parent / "locale")])
    from colander import _ as colander_
    assert localizer.translate(colander_("Required")) == "必需"
    from pyramid.i18n import TranslationString
    assert localizer.translate(TranslationString("There was a problem with your submission",
                                                 domain="deform")) == "提交的内容有误"


def test_default_locale_setting_is_the_fallback(make_app) -> None:
    client = webtest.TestApp(make_app(**{"pyramid.default_locale_name": "zh_CN"}),
                             extra_environ={"HTTP_HOST": "example.com"})
    assert h1(client.get("/")) == "会话与文件上传"
    assert h1(client.get("/", headers={"Accept-Language": "en"})) == "Sessions and file uploads"
