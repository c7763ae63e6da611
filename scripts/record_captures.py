#!/usr/bin/env python3
"""Record real multipart uploads from the clients on this machine.

    python scripts/record_captures.py [--out DIR] [--client NAME ...]

Starts a small raw-socket HTTP server on 127.0.0.1 that keeps the exact bytes
of each request (request line, headers, body as sent, chunked framing
included), then has each real client upload the same input files to it:

    chromium-form   Chromium (Playwright): a page's <form> with <input type=file multiple>, submitted by a click
    chromium-fetch  Chromium (Playwright): fetch() of a FormData built from that form
    curl            curl -F
    requests        Python requests, files=[...]
    node-fetch      Node's built-in fetch() and FormData (scripts/record_captures_node.mjs)

Each capture is written to ``DIR/<client>/<case>/request.http`` beside
``expected.json``: the text fields and, per file, the field, name, size and
sha256, computed from the input files themselves (never from a parser), so
that the tests can check the upload pipeline against what was really sent.

Default DIR: tests/uploads/captures.  Re-record after a client upgrade and
commit the result; the tests replay whatever is there.
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "tests" / "uploads" / "captures"
NODE_SCRIPT = Path(__file__).resolve().with_name("record_captures_node.mjs")
CHROMIUM = os.environ.get("SESSUP_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]

FIELD = "inputFile"
TEXT_FIELD = "description"
# A text value with non-ASCII letters, a quote, an ampersand and angle brackets
# (none of which a client may escape in a part body).
TEXT_VALUE = 'Grüße, 你好 — "quoted" & <b>not html</b>'
#: Biggest request the capture server keeps (the inputs are a few KiB).
MAX_REQUEST = 1024 * 1024


def _binary() -> bytes:
    """Bytes that look like the delimiters of every client recorded here,
    starting with CRLF and ending with a bare CR, so that a parser which
    matches a boundary too early, or drops or keeps a CR it should not, gets
    a wrong sha256."""
    near = [
        b"\r\n--", b"\r\n------WebKitFormBoundary", b"\r\n------WebKitFormBoundaryAAAAAAAAAAAAAAAA",
        b"\r\n--------------------------", b"\r\n--------------------------0123456789abcdef",
        b"\r\n----formdata-undici-0", b"\r\n------formdata-undici-0123456789",
        b"\r\n--" + b"0123456789abcdef" * 2, b"\r\n--" + b"0123456789abcdef" * 2 + b"--",
        b"\r\n\r\n", b"--\r\n", b"\n--\n", b"\r\r\n\n",
    ]
    return b"\r\n" + bytes(range(256)) + b"".join(near) + bytes(range(255, -1, -1)) + b"\x00\r"


#: The input files, in upload order: (file name, content).  Names are NFC and
#: free of anything a sanitiser would change, so the expected display name is
#: the name itself.
INPUT_FILES: list[tuple[str, bytes]] = [
    ("unicode.txt", "Grüße aus Köln\n你好，世界\n🎉 emoji\r\nCRLF line\nlast line without newline".encode()),
    ("binary.bin", _binary()),
    ("empty.txt", b""),
    ("résumé 简历.txt", b"a non-ASCII file name\n"),
    ('say "hi"; it\'s.txt', b"a quote, a semicolon and an apostrophe in the name\n"),
]


@dataclass(frozen=True)
class Case:
    name: str
    #: Files of INPUT_FILES sent in FIELD (by name); empty: the file input left empty.
    files: tuple[str, ...]
    #: What the case checks, for expected.json.
    title: str
    #: Send the body with Transfer-Encoding: chunked (no Content-Length).
    chunked: bool = False


CASES = {
    "multi": Case("multi", tuple(name for name, _ in INPUT_FILES),
                  "a text field and several files in one field: unicode text, binary with near-boundaries "
                  "and CR/LF at both ends, an empty file, a non-ASCII name, a quote in the name"),
    "chunked": Case("chunked", tuple(name for name, _ in INPUT_FILES),
                    "the same upload sent with Transfer-Encoding: chunked (no Content-Length)", chunked=True),
    "no-file": Case("no-file", (),
                    "the file input left empty: browsers send a part with filename=\"\" and no data"),
}


# --- the capture server ------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>capture</title></head>
<body>
<form id="form" method="post" enctype="multipart/form-data" action="{action}">
<input type="text" name="{text_field}" value="{text_value}">
<input type="file" name="{field}" multiple>
<button id="submit" type="submit">Send</button>
</form>
</body></html>
"""


class CaptureServer:
    """HTTP/1.1 on 127.0.0.1: ``GET /page?action=PATH`` serves the upload form,
    ``POST /capture/<client>/<case>`` keeps the raw request and answers 200."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.captures: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> CaptureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def wait_for(self, key: str, timeout: float = 30.0) -> bytes:
        with self.arrived:
            if not self.arrived.wait_for(lambda: key in self.captures, timeout):
                raise RuntimeError(f"no request arrived for {key} (errors: {self.errors})")
            return self.captures[key]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            try:
                raw = read_request(conn)
            except (OSError, ValueError) as exc:
                with self.lock:
                    self.errors.append(str(exc))
                return
            if not raw:
                return
            request_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = request_line.split(" ", 2)
            status, ctype, body = "404 Not Found", "text/plain", b"not found"
            if method == "GET" and target.startswith("/page?action="):
                action = html.escape(target.split("=", 1)[1])
                page = PAGE.format(action=action, field=FIELD, text_field=TEXT_FIELD,
                                   text_value=html.escape(TEXT_VALUE))
                status, ctype, body = "200 OK", "text/html; charset=utf-8", page.encode()
            elif method == "POST" and target.startswith("/capture/"):
                status, body = "200 OK", b"recorded"
                with self.arrived:
                    self.captures[target[len("/capture/"):]] = raw
                    self.arrived.notify_all()
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    f"Cache-Control: no-store\r\nConnection: close\r\n\r\n")
            conn.sendall(head.encode() + body)


def read_request(conn: socket.socket) -> bytes:
    """One request's exact bytes: head, then a Content-Length or chunked body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            if data:
                raise ValueError("connection closed inside the request head")
            return b""
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = parse_head(head)[1]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while not chunked_complete(rest):
            rest += _recv(conn)
    else:
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += _recv(conn)
    return head + b"\r\n\r\n" + rest


def _recv(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ValueError("connection closed inside the request body")
    return chunk


def parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """Request line and headers (names lower-cased) of a request head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def dechunk(data: bytes) -> tuple[bytes, int]:
    """Decode a chunked body; returns (body, bytes consumed).  Raises
    ``ValueError`` while incomplete or malformed."""
    out: list[bytes] = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("incomplete chunk size line")
        size = int(data[pos:end].split(b";", 1)[0], 16)
        pos = end + 2
        if size == 0:
            # No trailers are expected from these clients: just the final CRLF.
            if data[pos:pos + 2] != b"\r\n":
                raise ValueError("incomplete chunked body end")
            return b"".join(out), pos + 2
        if len(data) < pos + size + 2:
            raise ValueError("incomplete chunk")
        out.append(data[pos:pos + size])
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise ValueError("chunk not followed by CRLF")
        pos += size + 2


def chunked_complete(data: bytes) -> bool:
    try:
        dechunk(data)
    except ValueError:
        return False
    return True


# --- the clients ---------------------------------------------------------------------------

Recorder = Callable[[CaptureServer, str, Case, Path], None]


def _paths(case: Case, inputs: Path) -> list[str]:
    return [str(inputs / name) for name in case.files]


def record_chromium(server: CaptureServer, client: str, case: Case, inputs: Path, how: str) -> None:
    from playwright.sync_api import sync_playwright

    key = f"{client}/{case.name}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/page?action=/capture/{key}")
            page.set_input_files("input[type=file]", _paths(case, inputs))
            if how == "form":
                page.click("#submit")
            else:
                page.evaluate("""async (action) => {
                    const form = document.getElementById('form');
                    const res = await fetch(action, {method: 'POST', body: new FormData(form)});
                    if (!res.ok) throw new Error('capture server answered ' + res.status);
                }""", f"/capture/{key}")
            server.wait_for(key)
        finally:
            browser.close()


def record_curl(server: CaptureServer, client: str, case: Case, inputs: Path) -> None:
    # --form-string sends the value as is (-F would treat ';type=' and a leading @ or <).
    # The file name is given in filename="..." with backslash escapes, as curl's -F syntax wants.
    args = ["curl", "-sS", "--fail", "-o", os.devnull, "--form-string", f"{TEXT_FIELD}={TEXT_VALUE}"]
    if case.chunked:
        args += ["-H", "Transfer-Encoding: chunked"]
    for name in case.files:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        path = str(inputs / name).replace("\\", "\\\\").replace('"', '\\"')
        args += ["-F", f'{FIELD}=@"{path}";filename="{quoted}"']
    subprocess.run([*args, f"{server.url}/capture/{client}/{case.name}"], check=True, timeout=60)


def record_requests(server: CaptureServer, client: str, case: Case, inputs: Path) -> None:
    import requests

    handles = [open(inputs / name, "rb") for name in case.files]
    try:
        files = [(FIELD, (name, handle)) for name, handle in zip(case.files, handles)]
        res = requests.post(f"{server.url}/capture/{client}/{case.name}", data={TEXT_FIELD: TEXT_VALUE},
                            files=files, timeout=60)
        res.raise_for_status()
    finally:
        for handle in handles:
            handle.close()


def record_node(server: CaptureServer, client: str, case: Case, inputs: Path) -> None:
    job = {"url": f"{server.url}/capture/{client}/{case.name}", "field": FIELD,
           "fields": [[TEXT_FIELD, TEXT_VALUE]], "files": [[name, str(inputs / name)] for name in case.files]}
    subprocess.run(["node", str(NODE_SCRIPT), json.dumps(job)], check=True, timeout=60)


CLIENTS: dict[str, tuple[Recorder, tuple[str, ...]]] = {
    "chromium-form": (lambda s, c, k, i: record_chromium(s, c, k, i, "form"), ("multi", "no-file")),
    "chromium-fetch": (lambda s, c, k, i: record_chromium(s, c, k, i, "fetch"), ("multi",)),
    "curl": (record_curl, ("multi", "chunked")),
    "requests": (record_requests, ("multi",)),
    "node-fetch": (record_node, ("multi",)),
}


def client_version(client: str) -> str:
    """The client's version, for expected.json (which build sent these bytes)."""
    if client.startswith("chromium"):
        out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout
        return out.strip()
    if client == "curl":
        out = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
        return out.split("\n")[0].split(" (")[0]
    if client == "requests":
        import requests
        return f"requests {requests.__version__}"
    if client == "node-fetch":
        return "node " + subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return ""


def expected_for(client: str, case: Case, version: str) -> dict[str, Any]:
    contents = dict(INPUT_FILES)
    return {
        "client": client,
        "recorded_with": version,
        "case": case.name,
        "title": case.title,
        "fields": {TEXT_FIELD: [TEXT_VALUE]},
        "files": [
            {"field": FIELD, "filename": name, "size": len(contents[name]),
             "sha256": hashlib.sha256(contents[name]).hexdigest()}
            for name in case.files
        ],
    }


def write_inputs(directory: Path) -> None:
    for name, content in INPUT_FILES:
        (directory / name).write_bytes(content)


def record(out: Path, clients: list[str]) -> list[Path]:
    """Record every case of ``clients`` into ``out``; returns the directories written."""
    written = []
    with tempfile.TemporaryDirectory(prefix="sessup-capture-inputs-") as tmp, CaptureServer() as server:
        inputs = Path(tmp)
        write_inputs(inputs)
        for client in clients:
            recorder, case_names = CLIENTS[client]
            version = client_version(client)
            for case_name in case_names:
                case = CASES[case_name]
                recorder(server, client, case, inputs)
                raw = server.wait_for(f"{client}/{case.name}")
                target = out / client / case.name
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                (target / "request.http").write_bytes(raw)
                expected = expected_for(client, case, version)
                (target / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n",
                                                      encoding="utf-8")
                written.append(target)
                print(f"{client}/{case.name}: {len(raw)} bytes ({version})")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--client", action="append", choices=sorted(CLIENTS), dest="clients",
                        help="record only this client (repeatable); default: all")
    args = parser.parse_args(argv)
    record(args.out, args.clients or list(CLIENTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
