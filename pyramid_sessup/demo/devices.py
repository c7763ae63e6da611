"""A short, readable name for a browser's ``User-Agent``: "Firefox 128", "macOS".

Enough to tell one's own devices apart on the sessions page; not a full
parser.  The header is the client's word, so anything unknown or odd gives
``None`` (the page then says "Unknown device"), never an exception.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: Longest header looked at: past this it is noise (or an attack), not a browser.
MAX_USER_AGENT = 512

#: (pattern, name) in order: Chromium-based browsers name Chrome and Safari too,
#: so the specific ones come first.  Group 1 is the version, when there is one.
_BROWSERS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), name) for p, name in (
    (r"\bEdg(?:e|A|iOS)?/(\d+)", "Edge"),
    (r"\bOPR/(\d+)", "Opera"),
    (r"\bSamsungBrowser/(\d+)", "Samsung Internet"),
    (r"\bYaBrowser/(\d+)", "Yandex Browser"),
    (r"\bVivaldi/(\d+)", "Vivaldi"),
    (r"\b(?:Firefox|FxiOS)/(\d+)", "Firefox"),
    (r"\bChromium/(\d+)", "Chromium"),
    (r"\b(?:HeadlessChrome|Chrome|CriOS)/(\d+)", "Chrome"),
    (r"\bVersion/(\d+)[.\d]* (?:Mobile/\S+ )?Safari/", "Safari"),
    (r"\bcurl/(\d+)", "curl"),
    (r"\bWget/(\d+)", "Wget"),
    (r"\bpython-requests/(\d+)", "Python requests"),
))

#: (pattern, name) in order: Android says Linux, iOS says "like Mac OS X".
_SYSTEMS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p), name) for p, name in (
    (r"\biPhone\b", "iPhone"),
    (r"\biPad\b", "iPad"),
    (r"\bAndroid\b", "Android"),
    (r"\bCrOS\b", "ChromeOS"),
    (r"\bWindows\b", "Windows"),
    (r"\bMac OS X\b|\bMacintosh\b", "macOS"),
    (r"\bLinux\b|\bX11\b", "Linux"),
))


@dataclass(frozen=True)
class Device:
    """What a ``User-Agent`` says: a browser (with its major version) and a system, each maybe ``None``."""

    browser: str | None
    system: str | None


def describe(user_agent: str | None) -> Device:
    """The browser and system named by ``user_agent`` (``None`` for what is not recognised)."""
    if not user_agent or len(user_agent) > MAX_USER_AGENT or not user_agent.isprintable():
        return Device(None, None)
    browser = None
    for pattern, name in _BROWSERS:
        match = pattern.search(user_agent)
        if match:
            browser = f"{name} {match.group(1)}"
            break
    system = next((name for pattern, name in _SYSTEMS if pattern.search(user_agent)), None)
    return Device(browser, system)
