"""Shared fixtures: a per-test application (own upload and session directories),
WebTest clients, real-service switches, and an S3-compatible server process."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pytest
import webtest
from pyramid.paster import get_appsettings
from pyramid.testing import testConfig

from pyramid_sessup.demo import main

from .s3 import S3Server, start_s3_server
from .support import ROOT

# Pyramid imports pkg_resources, which setuptools >= 80 deprecates with a UserWarning at import time
# (Python 3.13 venvs get such a setuptools). pytest.ini ignores it in this process; the servers and
# scripts the tests start print it on stderr before anything of ours, so they ignore it too, the
# way docs/deployment.md tells users to.
PKG_RESOURCES_WARNING = "ignore:pkg_resources is deprecated as an API:UserWarning"


def pytest_configure(config: pytest.Config) -> None:
    current = os.environ.get("PYTHONWARNINGS", "")
    if PKG_RESOURCES_WARNING not in current:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [current, PKG_RESOURCES_WARNING]))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--ini", default=str(ROOT / "testing.ini"), help="INI file the tests start from")


@pytest.fixture(scope="session")
def base_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(get_appsettings(request.config.option.ini))


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    path = tmp_path / "uploads"
    path.mkdir()
    return path


@pytest.fixture
def settings(base_settings: dict[str, Any], upload_dir: Path, tmp_path: Path) -> dict[str, Any]:
    return {
        **base_settings,
        "sessup.upload.path": str(upload_dir),
        "sessup.session.file.path": str(tmp_path / "sessions"),
    }


@pytest.fixture
def make_app(settings: dict[str, Any]):
    """Build an app with extra settings: ``make_app(**{"sessup.session.rolling": "true"})``."""

    def make(**overrides: Any) -> Any:
        return main({}, **{**settings, **overrides})

    return make


@pytest.fixture
def app(make_app: Any) -> Any:
    return make_app()


@pytest.fixture
def testapp(app: Any) -> webtest.TestApp:
    return webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})


@pytest.fixture
def config(settings: dict[str, Any]) -> Iterator[Any]:
    with testConfig(settings=settings) as config:
        yield config


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """``moto_server`` in its own process, for the whole run."""
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A new, empty bucket for one test; removed afterwards."""
    bucket = s3_server.new_bucket()
    try:
        yield bucket
    finally:
        s3_server.drop_bucket(bucket)
