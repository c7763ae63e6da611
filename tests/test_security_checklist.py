"""SECURITY.md's threat tables stay complete and true to the test suite.

Every threat the project promises to handle has a row; every row names at
least one test; every named test (``path::name``, optionally with a
parametrize id) is collected by pytest.
"""
from __future__ import annotations

import re
import subprocess
import sys
from functools import lru_cache

import pytest

from .support import ROOT

SECURITY = ROOT / "SECURITY.md"

#: The threats SECURITY.md must cover, as its rows name them.
SESSION_THREATS = ["Tampered IDs", "Oversized IDs", "Unknown IDs", "Expired IDs", "Fixation", "Logout", "Logout races",
                   "Stolen sessions", "User IDs in the store", "Sessions that never end", "Long-lived stolen IDs",
                   "Pickle", "Leaked store dumps",
                   "Cookie flags", "CSRF", "Untrusted `Host`", "Shadowed routes", "Cache leaks (`Vary: Cookie`)",
                   "CSRF token after login and logout", "Cached session answers (`no-store`)",
                   "Anonymous visitors filling the store", "Duplicate session cookies", "Undecodable input (never a 5xx)"]
UPLOAD_THREATS = ["Traversal", "NUL", "Long names", "Reserved names", "Bidi and Unicode tricks", "Double extensions",
                  "Stored XSS", "Spoofed types", "Part floods", "Huge headers", "CRLF junk", "Header ReDoS",
                  "Boundary errors", "Truncation", "Disconnects", "Slow bodies", "Refused bodies", "Lying Content-Length", "Disk full",
                  "Descriptor leaks", "Predictable names", "Symlinks", "Server path leaks",
                  "Resumable uploads of others", "Deferred and joined sizes", "Half-joined uploads",
                  "Abandoned partial uploads", "Malware", "Unverified files", "Upload floods",
                  "Ambiguous multipart", "Range and conditional requests"]
OBJECT_STORAGE_THREATS = ["Unchecked files in the bucket", "Abandoned multipart uploads", "Object storage outage",
                          "Leaked storage credentials", "Active content from the bucket"]
FAULT_THREATS = ["Session store outage", "Crash mid-upload", "Memory growth under load", "Read-only upload directory",
                 "Deleted working folders", "Crashed lock holder", "Vanishing folders",
                 "Virus scanner outage", "Many files in one form"]
DEPLOY_THREATS = ["Production exposure"]

NODE_ID = re.compile(r"`(tests/[^`\s]+?\.py::[^`]+)`")


def table_rows(text: str) -> dict[str, list[str]]:
    """Threat -> node ids, from every ``| Threat | How | Tests |`` table row."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("| ---") or line.startswith("| Threat |"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 3, f"a row of SECURITY.md does not have 3 cells: {line[:80]}"
        threat, _how, tests = cells
        assert threat not in rows, f"threat listed twice: {threat}"
        rows[threat] = NODE_ID.findall(tests)
    return rows


@lru_cache(maxsize=1)
def collected(files: tuple[str, ...]) -> frozenset[str]:
    """Node ids pytest collects from ``files`` (in a subprocess: a clean collection)."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    ids = frozenset(line.strip() for line in result.stdout.splitlines() if "::" in line)
    assert ids, f"pytest collected nothing:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return ids


@pytest.fixture(scope="module")
def rows() -> dict[str, list[str]]:
    return table_rows(SECURITY.read_text(encoding="utf-8"))


@pytest.mark.parametrize("threat", SESSION_THREATS + UPLOAD_THREATS + OBJECT_STORAGE_THREATS + FAULT_THREATS
                         + DEPLOY_THREATS)
def test_every_threat_has_a_row_naming_tests(rows: dict[str, list[str]], threat: str) -> None:
    assert threat in rows, f"SECURITY.md has no row for {threat!r}"
    assert rows[threat], f"SECURITY.md names no test for {threat!r}"


def test_every_named_test_exists(rows: dict[str, list[str]]) -> None:
    named = sorted({node for nodes in rows.values() for node in nodes})
    files = tuple(sorted({node.split("::", 1)[0] for node in named}))
    for path in files:
        assert (ROOT / path).is_file(), f"SECURITY.md names a missing file: {path}"
    ids = collected(files)
    missing = []
    for node in named:
        if "[" in node:
            found = node in ids
        else:
            found = node in ids or any(i.startswith(node + "[") for i in ids)
        if not found:
            missing.append(node)
    assert not missing, "SECURITY.md names tests that do not exist:\n" + "\n".join(missing)


def test_no_row_outside_the_listed_threats(rows: dict[str, list[str]]) -> None:
    """A new row must be added to the lists above too, so this test guards it."""
    assert set(rows) == set(SESSION_THREATS + UPLOAD_THREATS + OBJECT_STORAGE_THREATS + FAULT_THREATS + DEPLOY_THREATS)
