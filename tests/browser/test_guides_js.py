"""The JavaScript block of docs/from-express.md (and its Chinese twin), run
in Chromium on the page of the app the guide builds, served by a real pserve."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ..docs.blocks import GUIDES, runnable
from ..docs.test_from_express import serve_guide_app
from ..support import free_port
from .conftest import random_file

pytestmark = [pytest.mark.browser, pytest.mark.server]


@pytest.mark.parametrize("guide", GUIDES, ids=["en", "zh_CN"])
def test_the_sessup_upload_block_uploads_from_the_guide_page(guide: Path, tmp_path: Path, browser: Any) -> None:
    [block] = runnable(guide, "browser")
    site = tmp_path / "site"
    site.mkdir()
    port = free_port()
    with serve_guide_app(guide, site, port) as server:
        context = browser.new_context(base_url=server.url)
        try:
            page = context.new_page()
            page.goto("/")
            page.add_script_tag(content=block.code)
            original = random_file(tmp_path, "photo.bin", 300_000)
            page.set_input_files("#inputFile", str(original))
            page.click("#send")
            page.wait_for_function("() => document.getElementById('result').textContent !== ''")
            result = page.inner_text("#result")
            assert result.startswith("Stored at /uploads/") and result.endswith(".bin")
            assert page.title() == "100%"
            assert page.request.get(server.url + result.removeprefix("Stored at ")).body() == original.read_bytes()
        finally:
            context.close()
