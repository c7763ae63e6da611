"""The README's host-app section, run as written: every python block of it,
in order, in one namespace, then its test function."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..support import REDIS_URL, ROOT, require_service


def section_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.split(r"\n##+ ", text.split("## Use it in your own Pyramid app", 1)[1], maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_host_app_section_runs(tmp_path: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    blocks = section_blocks()
    assert len(blocks) == 3
    namespace: dict[str, Any] = {}
    for block in blocks:
        # The factory example names a local Redis; the tests use their own database.
        exec(compile(block.replace("redis://127.0.0.1:6379/0", REDIS_URL), "README.md", "exec"), namespace)
    namespace["test_upload_and_download"](tmp_path)
