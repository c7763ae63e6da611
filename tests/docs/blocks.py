"""Code blocks of the documentation, extracted and run as written.

A block's kind is the HTML comment on the line just above its fence:
``<!-- run: file NAME -->`` (written to NAME), ``<!-- run: serve -->`` (the
pserve command line), ``<!-- run: sh -->`` (a shell script run against the
server), ``<!-- run: browser -->`` (script run in the page), ``<!-- express -->``
(the Express side, shown for comparison, never run) or ``<!-- tested: ... -->``.

In a shell block, ``# -> TEXT`` lines give the output of the commands above
them; ``...`` stands for any text.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..support import ROOT

FENCE = re.compile(r"^(?:<!-- (?P<marker>.*?) -->\n)?```(?P<lang>[^\n`]*)\n(?P<code>.*?)^```\n", re.M | re.S)
BASE_LINE = re.compile(r"^BASE=\S+$", re.M)

GUIDES = [ROOT / "docs" / "from-express.md", ROOT / "docs" / "zh_CN" / "from-express.md"]


@dataclass
class Block:
    marker: str
    lang: str
    code: str


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [Block((m["marker"] or "").strip(), m["lang"].strip(), m["code"]) for m in FENCE.finditer(text)]


def runnable(path: Path, kind: str) -> list[Block]:
    return [b for b in blocks(path) if b.marker.split()[:2] == ["run:", kind]]


@dataclass
class Segment:
    commands: str
    expected: list[str]
    output: str = ""

    def matches(self) -> bool:
        pattern = ".*?".join(re.escape(part) for part in "\n".join(self.expected).split("..."))
        return re.fullmatch(pattern, self.output, re.S) is not None


def segments(code: str) -> list[Segment]:
    """The block cut after each run of ``# ->`` lines."""
    result: list[Segment] = []
    commands: list[str] = []
    expected: list[str] = []
    for line in code.splitlines():
        if line.startswith("# -> "):
            expected.append(line[len("# -> "):])
            continue
        if expected:
            result.append(Segment("\n".join(commands), expected))
            commands, expected = [], []
        commands.append(line)
    result.append(Segment("\n".join(commands), expected))
    return result


SEPARATOR = "@@@ segment @@@"


def run_shell(code: str, base: str, cwd: Path, timeout: float = 120) -> list[Segment]:
    """Run the block in one bash (``set -e``), ``BASE=`` pointed at ``base``; each
    segment gets its own output."""
    assert len(BASE_LINE.findall(code)) == 1, "a shell block names its server once, in a BASE= line"
    parts = segments(BASE_LINE.sub(f"BASE={base}", code))
    script = "set -euo pipefail\n" + "".join(f"{s.commands}\necho '{SEPARATOR}'\n" for s in parts)
    done = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"the block failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    outputs = done.stdout.split(SEPARATOR + "\n")
    assert len(outputs) == len(parts) + 1 and outputs[-1] == ""
    for segment, output in zip(parts, outputs):
        segment.output = output.rstrip("\n")
    return parts
