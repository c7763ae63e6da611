"""Start-up errors for bad settings, and includeme in a host application."""
from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.exceptions import ConfigurationError

from pyramid_sessup.demo import main
from pyramid_sessup.settings import PARAMS, parse_settings, reference_markdown

from .conftest import SECRET

BASE = {"sessup.session.secret": SECRET}


def parse(**settings: Any) -> dict[str, Any]:
    return parse_settings({**BASE, **settings}, environ={})


def test_defaults() -> None:
    values = parse()
    assert values.session.cookie_httponly is True
    assert values.session.resave is False
    assert values.session.save_uninitialized is False
    assert values.session.secret == (SECRET,)
    assert values.upload.field == "inputFile"


def test_unknown_key_names_it_and_the_closest_valid_key() -> None:
    with pytest.raises(ConfigurationError, match=r"sessup\.session\.rezave.*did you mean sessup\.session\.resave\?"):
        parse(**{"sessup.session.rezave": "true"})


def test_unknown_key_without_close_match() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown setting sessup\.zzz$"):
        parse(**{"sessup.zzz": "1"})


@pytest.mark.parametrize("key,value", [
    ("sessup.session.resave", "maybe"),
    ("sessup.session.timeout", "ten"),
    ("sessup.session.timeout", "0"),
    ("sessup.session.cookie.samesite", "sometimes"),
    ("sessup.session.cookie.max_age", "-5"),
    ("sessup.session.cookie.domain", "example.com; Secure"),
    ("sessup.session.name", "bad name"),
    ("sessup.session.store", "mongodb"),
    ("sessup.upload.max_file_size", "1e6"),
    ("sessup.upload.allowed_extensions", "png ../x"),
])
def test_wrong_type_names_key_and_value(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(**{key: value})
    assert key in str(info.value) and repr(value) in str(info.value)


def test_booleans_really_parsed() -> None:
    assert parse(**{"sessup.session.rolling": "false"}).session.rolling is False
    assert parse(**{"sessup.session.rolling": "On"}).session.rolling is True


@pytest.mark.parametrize("key", ["session.type", "beaker.session.invalidate_corrupt", "beaker.session.id"])
def test_beaker_keys_are_refused(key: str) -> None:
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        parse(**{key: "x"})


def test_secret_required() -> None:
    with pytest.raises(ConfigurationError, match="sessup.session.secret is required"):
        parse_settings({}, environ={})


def test_environment_secret_overrides_ini() -> None:
    values = parse_settings({**BASE}, environ={"SESSUP_SECRET": "a" * 40 + " old-secret"})
    assert values.session.secret == ("a" * 40, "old-secret")


def test_production_refuses_missing_or_development_secret(tmp_path: Any) -> None:
    prod = {"sessup.production": "true", "sessup.session.store": "file", "sessup.session.file.path": str(tmp_path)}
    with pytest.raises(ConfigurationError, match="required"):
        parse_settings({**prod, "sessup.session.secret": ""}, environ={})
    with pytest.raises(ConfigurationError, match="development or short secret"):
        parse_settings({**prod, "sessup.session.secret": SECRET}, environ={})
    with pytest.raises(ConfigurationError, match="development or short secret"):
        parse_settings({**prod, "sessup.session.secret": "short"}, environ={})
    values = parse_settings({**prod, "sessup.session.secret": ""}, environ={"SESSUP_SECRET": "x" * 48})
    assert values.production is True


def test_samesite_none_requires_secure() -> None:
    with pytest.raises(ConfigurationError, match="samesite = none requires"):
        parse(**{"sessup.session.cookie.samesite": "none"})
    parse(**{"sessup.session.cookie.samesite": "none", "sessup.session.cookie.secure": "true"})


def test_store_requirements() -> None:
    with pytest.raises(ConfigurationError, match="file.path"):
        parse(**{"sessup.session.store": "file"})
    with pytest.raises(ConfigurationError, match="sessup.session.url"):
        parse(**{"sessup.session.store": "redis", "sessup.session.url": "http://x"})


def test_main_refuses_bad_settings_at_start_up(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="did you mean"):
        main({}, **{**settings, "sessup.session.timout": "5"})


def test_reference_lists_every_key() -> None:
    text = reference_markdown()
    for param in PARAMS:
        assert f"`sessup.{param.key}`" in text


def test_include_in_a_host_app() -> None:
    config = Configurator(settings={**BASE})
    config.include("pyramid_sessup")
    config.include("pyramid_sessup.session_api")

    def view(request: Any) -> dict[str, int]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    config.add_route("count", "/count")
    config.add_view(view, route_name="count", renderer="json")
    app = webtest.TestApp(config.make_wsgi_app())
    assert app.get("/count").json == {"n": 1}
    assert app.get("/count").json == {"n": 2}
    assert app.get("/csrf").json["csrf_token"]
    # Host apps get the session layer and the routes they include, not the demo pages.
    app.get("/", status=404)


def test_configuration_reference_is_current() -> None:
    from pyramid_sessup.settings import render_reference_into

    from ..support import ROOT

    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert render_reference_into(text) == text, (
        "docs/configuration.md is out of date: run python -m pyramid_sessup.settings docs/configuration.md"
    )


def test_every_key_is_a_typed_field_with_its_default() -> None:
    from operator import attrgetter

    from pyramid_sessup.settings import SessupSettings, field_name

    values = parse_settings({"sessup.session.secret": "s"}, environ={})
    assert isinstance(values, SessupSettings)
    for param in PARAMS:
        expected = ("s",) if param.key == "session.secret" else param.default
        assert attrgetter(field_name(param.key))(values) == expected, param.key
    with pytest.raises(FrozenInstanceError):
        values.session.timeout = 1  # type: ignore[misc]


def test_lifetime_and_rotation_defaults() -> None:
    values = parse()
    assert (values.session.max_lifetime, values.session.rotate_after, values.session.rotate_grace) == (0, 0, 30)


@pytest.mark.parametrize("key,value", [
    ("sessup.session.max_lifetime", "-1"),
    ("sessup.session.max_lifetime", "8h"),
    ("sessup.session.rotate_after", "-60"),
    ("sessup.session.rotate_after", "1.5"),
    ("sessup.session.rotate_grace", "0"),
    ("sessup.session.rotate_grace", "soon"),
])
def test_bad_lifetime_or_rotation_value_names_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse(**{key: value})
    assert key in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize("settings,named", [
    # A lifetime shorter than the idle timeout: the timeout would never act (a unit slip, usually).
    ({"sessup.session.max_lifetime": "600"}, "sessup.session.max_lifetime"),
    ({"sessup.session.timeout": "60", "sessup.session.max_lifetime": "59"}, "sessup.session.max_lifetime"),
    # The grace must end before the old ID's tombstone would, and before the next rotation.
    ({"sessup.session.timeout": "30", "sessup.session.rotate_after": "300"}, "sessup.session.rotate_grace"),
    ({"sessup.session.rotate_after": "30"}, "sessup.session.rotate_grace"),
    ({"sessup.session.rotate_after": "60", "sessup.session.rotate_grace": "60"}, "sessup.session.rotate_grace"),
    # Rotation that the lifetime would always beat.
    ({"sessup.session.max_lifetime": "3600", "sessup.session.rotate_after": "3600"}, "sessup.session.rotate_after"),
])
def test_lifetime_and_rotation_that_cannot_work_stop_start_up(settings: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named.replace(".", r"\.")):
        parse(**settings)


def test_lifetime_and_rotation_that_fit_are_accepted() -> None:
    values = parse(**{"sessup.session.timeout": "1800", "sessup.session.max_lifetime": "28800",
                      "sessup.session.rotate_after": "900", "sessup.session.rotate_grace": "30"})
    assert (values.session.max_lifetime, values.session.rotate_after, values.session.rotate_grace) == (28800, 900, 30)
    # The grace is checked only when rotation is on: a short timeout alone stays valid.
    assert parse(**{"sessup.session.timeout": "5"}).session.rotate_grace == 30
    assert parse(**{"sessup.session.timeout": "5", "sessup.session.max_lifetime": "5"}).session.max_lifetime == 5
