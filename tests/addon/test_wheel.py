"""The package as users get it: a wheel built from this tree, installed
(non-editable) into a fresh virtualenv, serving the demo from a copy of
development.ini outside the source tree, with every asset its pages use."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from ..support import ROOT, free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

PAGES = ("/", "/ajax", "/upload", "/session/page", "/tus-demo", "/account/sign-in")


def run(*cmd: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as res:
        return res.status, res.read()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel of this tree installed; returns its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    # Build from a copy without the developer's venv and caches, as a fresh clone would.
    shutil.copytree(ROOT, source, symlinks=True,
                    ignore=shutil.ignore_patterns(".venv*", "node_modules", "*.egg-info", "build", "dist",
                                                  "__pycache__", ".git", "var", "results"))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "dist", source)
    wheel = next((work / "dist").glob("pyramid_sessup-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for asset in (ROOT / "static").iterdir():
        assert f"pyramid_sessup/static/{asset.name}" in names
    assert not any(n.startswith("tests/") for n in names)
    venv = work / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    return venv / "bin"


def test_installed_wheel_serves_every_asset_its_pages_use(installed: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(ROOT / "development.ini", site / "development.ini")  # as shipped; the port on the command line
    port = free_port()
    # The installed package, not this tree: run from outside it.
    code = "import pyramid_sessup, sys; print(pyramid_sessup.__file__)"
    assert str(ROOT) not in run(installed / "python", "-c", code, cwd=site)
    with running_server(site / "development.ini", port, cwd=site, pserve=str(installed / "pserve"),
                        args=[f"http_port={port}"]) as server:
        assets: set[str] = set()
        for page in PAGES:
            status, body = fetch(server.url + page)
            assert status == 200, page
            assets |= set(re.findall(r'(?:src|href)="(/(?:static|deform_static)/[^"?#]+)', body.decode()))
        assert {"/static/sessup.css", "/static/ajax-upload.js", "/static/sessup-upload.js",
                "/static/sessup-tus.js"} <= assets
        for asset in sorted(assets):
            status, body = fetch(server.url + asset)
            assert status == 200, asset
            if asset.startswith("/static/"):
                assert body == (ROOT / "static" / asset.removeprefix("/static/")).read_bytes(), asset


@pytest.mark.parametrize("store, url, extra", [
    ("redis", "redis://127.0.0.1:6379/0", "redis"),
    ("postgresql", "postgresql://postgres@127.0.0.1:5432/test", "postgresql"),
])
def test_a_missing_store_driver_names_the_extra(installed: Path, store: str, url: str, extra: str) -> None:
    # The wheel was installed without extras: neither driver is there.
    code = ("from pyramid.exceptions import ConfigurationError\n"
            "from pyramid_sessup.demo import main\n"
            "try:\n"
            f"    main({{}}, **{{'sessup.session.secret': 'x', 'sessup.session.store': {store!r},"
            f" 'sessup.session.url': {url!r}}})\n"
            "except ConfigurationError as exc:\n"
            "    print(exc)\n")
    out = run(installed / "python", "-c", code)
    assert f"pip install 'pyramid_sessup[{extra}]'" in out and f"sessup.session.store = {store}" in out
