"""Real-browser tests: Debian's Chromium driven by Playwright for Python,
against real waitress (``pserve``) started for each test.

Never downloads a browser: Chromium is ``/usr/bin/chromium`` (``apt-get install
chromium``; ``scripts/test.sh`` does it).  Without it (or without the
``playwright`` package) the tests skip on a developer machine and fail under
``CI=true``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..support import Server, free_port, start_server, unavailable, write_ini

CHROMIUM = os.environ.get("SESSUP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e '.[testing]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class App:
    """A running server, its upload directory and a browser context on it."""

    server: Server
    url: str
    upload_dir: Path
    context: Any

    def new_page(self) -> Any:
        page = self.context.new_page()
        page.set_default_timeout(60_000)
        return page

    def stored(self) -> list[str]:
        return sorted(p.name for p in self.upload_dir.iterdir() if p.is_file())

    def temporary(self) -> list[str]:
        tmp = self.upload_dir / ".tmp"
        return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def start_app(tmp_path: Path, browser: Any, overrides: dict[str, str] | None = None,
              locale: str = "en-US", server: dict[str, str] | None = None) -> tuple[Server, App]:
    upload_dir = tmp_path / "uploads"
    port = free_port()
    ini = write_ini(tmp_path, {
        "sessup.upload.path": str(upload_dir),
        "sessup.upload.max_file_size": str(64 * MiB),
        "sessup.upload.max_total_size": str(128 * MiB),
        **(overrides or {}),
    }, port=port, server=server)
    process = start_server(ini, port)
    context = browser.new_context(base_url=process.url, locale=locale, accept_downloads=True)
    return process, App(server=process, url=process.url, upload_dir=upload_dir, context=context)


@pytest.fixture
def app(tmp_path: Path, browser: Any) -> Iterator[App]:
    server, app = start_app(tmp_path, browser)
    try:
        yield app
    finally:
        app.context.close()
        server.stop()


@pytest.fixture
def zh_app(tmp_path: Path, browser: Any) -> Iterator[App]:
    server, app = start_app(tmp_path, browser, {"sessup.upload.max_file_size": str(MiB)}, locale="zh-CN")
    try:
        yield app
    finally:
        app.context.close()
        server.stop()


def random_file(directory: Path, name: str, size: int) -> Path:
    """A file of ``size`` random bytes (written in 1 MiB steps)."""
    path = directory / name
    with open(path, "wb") as f:
        left = size
        while left:
            step = min(left, MiB)
            f.write(os.urandom(step))
            left -= step
    return path


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def throttle_upload(page: Any, bytes_per_second: int) -> Any:
    """Slow this page's uploads (Chrome DevTools network emulation)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": bytes_per_second})
    return cdp
