"""Display names, extensions and media types of uploaded files."""
from __future__ import annotations

import pytest

from pyramid_sessup.uploads import names


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("report.pdf", "report.pdf"),
        ("../../x.txt", "x.txt"),
        ("..\\..\\x.txt", "x.txt"),
        ("C:\\fakepath\\photo.JPG", "photo.JPG"),
        ("/etc/passwd", "passwd"),
        ("../", ""),
        ("..", ""),
        ("a\x00b.txt", "ab.txt"),
        ("evil\r\nSet-Cookie: x.txt", "evilSet-Cookie: x.txt"),
        ("abc\u202etxt.exe", "abctxt.exe"),
        ("\u2066x\u2069.png", "x.png"),
        ("caf\u0065\u0301.txt", "caf\u00e9.txt"),  # NFD -> NFC
        ("\uff0e\uff0e\uff0fx", "\uff0e\uff0e\uff0fx"),  # fullwidth stays text, never a path
        ("  spaced .txt  ", "spaced .txt"),
        ("", ""),
        (None, ""),
    ],
)
def test_sanitize_filename(raw: str | None, expected: str) -> None:
    assert names.sanitize_filename(raw) == expected


def test_long_names_are_cut_to_255_bytes_keeping_the_extension() -> None:
    name = names.sanitize_filename("a" * 1000 + ".txt")
    assert len(name.encode()) <= 255 and name.endswith(".txt")
    multi = names.sanitize_filename("\u00e9" * 1000 + ".png")
    assert len(multi.encode()) <= 255 and multi.endswith(".png")
    multi.encode("utf-8")  # never a split character
    no_ext = names.sanitize_filename("\u65e5" * 300)
    assert len(no_ext.encode()) <= 255 and set(no_ext) == {"\u65e5"}


def test_filename_star_only_used_without_filename() -> None:
    assert names.display_name(None, "UTF-8''na%C3%AFve%20file.txt") == "na\u00efve file.txt"
    assert names.display_name("plain.txt", "UTF-8''evil.html") == "plain.txt"
    assert names.display_name(None, "iso-8859-1'en'%E9t%E9.txt") == "\u00e9t\u00e9.txt"
    assert names.display_name(None, "UTF-8''..%2F..%2Fx.txt") == "x.txt"
    assert names.display_name(None, "koi8-r''x.txt") == ""
    assert names.display_name(None, "garbage") == ""
    assert names.display_name(None, "UTF-8''%FF%FE") == ""


def test_recover_utf8() -> None:
    assert names.recover_utf8("\u65e5\u672c.txt".encode().decode("latin-1")) == "\u65e5\u672c.txt"
    assert names.recover_utf8("caf\u00e9") == "caf\u00e9"  # real latin-1 stays


@pytest.mark.parametrize(
    "name, ext",
    [("a.PNG", "png"), ("x.tar.gz", "gz"), ("x.php.jpg", "jpg"), (".bashrc", ""), ("noext", ""),
     ("x.", ""), ("x.toolongextension", ""), ("x.p\u00e9", ""), ("x.h-t", ""), ("..png", "")],
)
def test_extension_of(name: str, ext: str) -> None:
    assert names.extension_of(name) == ext


def test_allow_lists() -> None:
    assert names.extension_allowed("png", ())
    assert names.extension_allowed("png", ("png", "jpg"))
    assert not names.extension_allowed("", ("png",))
    assert not names.extension_allowed("php", ("png",))
    assert names.type_allowed("image/png", ("image/*",))
    assert names.type_allowed("text/plain", ())
    assert not names.type_allowed("text/html", ("image/*", "application/pdf"))
    assert names.guess_type("png") == "image/png"
    assert names.guess_type("") == names.guess_type("qqqzz") == "application/octet-stream"


def test_stored_extension_never_executable() -> None:
    assert names.stored_extension("php", ()) == ""
    assert names.stored_extension("png", ()) == "png"
    assert names.stored_extension("php", ("php",)) == "php"  # explicitly allowed


def test_parse_header_params() -> None:
    main, params = names.parse_header_params('multipart/form-data; boundary="a;b\\"c"; charset=utf-8')
    assert main == "multipart/form-data"
    assert params == [("boundary", 'a;b"c'), ("charset", "utf-8")]
    main, params = names.parse_header_params('form-data; name="x; filename*=UTF-8\'\'e.html"')
    assert params == [("name", "x; filename*=UTF-8''e.html")]
    assert names.parse_header_params("text/plain") == ("text/plain", [])
    # hostile input: linear, no exception
    names.parse_header_params("multipart/form-data;" + " ;=" * 10000 + '"' * 10000)


def test_content_disposition() -> None:
    assert names.content_disposition("attachment", "a.txt") == 'attachment; filename="a.txt"'
    value = names.content_disposition("attachment", "r\u00e9sum\u00e9 \"1\".pdf")
    assert value == ("attachment; filename=\"r_sum_ _1_.pdf\"; "
                     "filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf")
    assert names.content_disposition("attachment", "") == "attachment"
