"""What people read: one size format, short messages for every refusal code,
in English and Chinese; and the error codes documented in docs/errors.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyramid.i18n import make_localizer

from pyramid_sessup import exceptions
from pyramid_sessup.forms import i18n
from pyramid_sessup.forms.messages import UNREADABLE, UPLOAD_ERRORS, format_size, page_messages, upload_error_message

from ..support import ROOT

LOCALE = Path(i18n.__file__).resolve().parent.parent / "locale"
PACKAGE = ROOT / "pyramid_sessup"


def localizer(locale: str):  # noqa: ANN201
    return i18n.localizer_for(locale, [str(LOCALE)]) if locale != "plain" else make_localizer("en", [])


@pytest.mark.parametrize("size, en, zh", [
    (0, "0 bytes", "0 字节"), (1, "1 byte", "1 字节"), (12, "12 bytes", "12 字节"), (1023, "1023 bytes", "1023 字节"),
    (1024, "1 KiB", "1 KiB"), (200_000, "195.31 KiB", "195.31 KiB"), (20 * 1024 * 1024, "20 MiB", "20 MiB"),
    (3 * 1024 ** 4, "3072 GiB", "3072 GiB")])
def test_one_size_format_localized(size: int, en: str, zh: str) -> None:
    assert format_size(size) == en
    assert format_size(size, localizer("en")) == en
    assert format_size(size, localizer("zh_CN")) == zh


@pytest.mark.parametrize("locale, code, details, status, text", [
    ("en", "file_too_large", {"filename": "big.txt", "limit": 100_000}, 413,
     "big.txt is larger than 97.66 KiB, the limit per file."),
    ("zh_CN", "file_too_large", {"filename": "big.txt", "limit": 100_000}, 413,
     "big.txt 超过了每个文件 97.66 KiB 的上限。"),
    ("en", "total_too_large", {"limit": 1500}, 413,
     "Together the files are larger than 1.46 KiB, the limit per upload."),
    ("en", "too_many_files", {"limit": 3}, 413, "Too many files: at most 3 per upload."),
    ("zh_CN", "too_many_files", {"limit": 3}, 413, "文件太多：每次最多上传 3 个。"),
    ("en", "type_not_allowed", {"filename": "x.php", "allowed_extensions": ["png"], "allowed_types": ["image/*"]},
     415, "x.php is not an accepted type (accepted: .png, image/*)."),
    ("en", "csrf_token_invalid", {}, 403, "This page has expired; reload it and try again."),
    ("en", "malformed_body", {}, 400, "The server could not read the upload; try again."),
    ("en", "not-ours", {}, 413, "The upload is larger than the server accepts."),
    ("zh_CN", "not-ours", {}, 413, "上传的内容超过了服务器可接受的大小。"),
])
def test_short_messages_by_code(locale: str, code: str, details: dict, status: int, text: str) -> None:
    assert upload_error_message(localizer(locale), code, details, status) == text


def test_page_messages_cover_every_code_in_both_languages() -> None:
    for locale in ("en", "zh_CN"):
        messages = page_messages(localizer(locale))
        assert set(messages["errors"]) == set(UPLOAD_ERRORS)
        assert all(text and not re.fullmatch(r"[a-z-]+", text) for text in messages["errors"].values())
        assert messages["unreadable"] != "error-unreadable"
    zh = page_messages(localizer("zh_CN"))
    assert zh["bytes_one"] == zh["bytes_other"] == "${count} 字节"


def _raised_codes() -> set[str]:
    """Every error code the add-on can answer with: class codes and code="..." at raise sites."""
    codes = {cls.code for cls in vars(exceptions).values()
             if isinstance(cls, type) and issubclass(cls, exceptions.SessupError)}
    for path in PACKAGE.rglob("*.py"):
        if "demo" not in path.parts:
            codes |= set(re.findall(r'\bcode="([a-z_]+)"', path.read_text(encoding="utf-8")))
    return codes


def test_every_upload_code_has_a_message_or_is_unreadable() -> None:
    upload_codes = {c for c in _raised_codes() if c not in ("error", "not_found", "method_not_allowed",
                                                            "session_value")}
    without = upload_codes - set(UPLOAD_ERRORS)
    # These say the body could not be read as a form: one message for all.
    assert without <= {"malformed_body", "unexpected_file_field", "not_multipart", "upload_refused",
                       "tus_refused"}, without
    assert UNREADABLE.default


def test_every_error_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "errors.md").read_text(encoding="utf-8"),
                                re.M))
    assert _raised_codes() - documented == set()
