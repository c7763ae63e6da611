"""Bodies stream to the application under the production profile.

A refused upload (no session, no token, a declared size over the limits) is
answered while the client is still sending, and the server neither reads nor
stores the body: the client gets its 403/413 having sent a small fraction of
the 1 GiB it announced, and the server processes write next to nothing.  A
200 MiB upload is written once (``write_bytes`` of every server process,
nginx's included: it does not spool the body).
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import ssl
import time

import pytest

from ..support import io_written
from .conftest import Browser, Stack
from .nginx import client_context

pytestmark = [pytest.mark.server, pytest.mark.slow]

MiB = 1024 * 1024
GiB = 1024 * MiB
BOUNDARY = "prodboundary0Zx81"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
#: What the client may have sent when the refusal arrives: socket buffers on
#: both sides, nginx's body buffer and gunicorn's bounded drain.  A server that
#: read the body first would have taken all of it (1 GiB).
MOST_SENT_BEFORE_REFUSAL = 64 * MiB


def file_part_head(filename: str = "big.bin") -> bytes:
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="inputFile"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def connect(base: str, timeout: float = 30.0) -> socket.socket:
    https = base.startswith("https:")
    port = int(base.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if https:
        sock = client_context().wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def send_until_answered(base: str, headers: dict[str, str], declared: int) -> tuple[bytes, int]:
    """Send a POST /upFile announcing ``declared`` bytes, as fast as the server
    takes them, until an answer arrives (or the body is all sent).  Returns the
    answer's head and how many body bytes were sent by then."""
    sock = connect(base)
    head = f"POST /upFile HTTP/1.1\r\nHost: {host_of(base)}\r\nContent-Length: {declared}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    block = os.urandom(MiB)
    pending = memoryview(file_part_head() + block)
    sent = 0
    answer = b""
    deadline = time.monotonic() + 120
    sock.setblocking(False)
    try:
        while not complete(answer) and time.monotonic() < deadline:
            want_write = sent < declared
            readable, writable, _ = select.select([sock], [sock] if want_write else [], [], 5)
            if readable or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                try:
                    data = sock.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    data = None
                except ConnectionResetError:
                    break
                if data == b"":
                    break
                answer += data or b""
            if writable and b"\r\n\r\n" not in answer:
                try:
                    n = sock.send(pending[: declared - sent])
                except (ssl.SSLWantWriteError, BlockingIOError):
                    n = 0
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += n
                pending = pending[n:]
                if not pending:
                    pending = memoryview(block)
    finally:
        sock.close()
    return answer, sent


def complete(answer: bytes) -> bool:
    """The whole answer (head and Content-Length bytes of body) has arrived."""
    head, sep, body = answer.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def host_of(base: str) -> str:
    return base.split("://", 1)[1]


def origin_headers(base: str) -> dict[str, str]:
    """What a browser adds to a same-origin POST (Pyramid checks Origin on HTTPS)."""
    return {"Origin": base} if base.startswith("https:") else {}


FRONTS = ["gunicorn", "nginx"]


def base_of(stack: Stack, front: str) -> str:
    return stack.server.url if front == "gunicorn" else stack.front.url


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("case", ["no session", "session without token", "over the size limits"])
def test_refused_1_gib_upload_is_answered_before_the_body_is_read(stack: Stack, front: str, case: str) -> None:
    base = base_of(stack, front)
    headers = {"Content-Type": CONTENT_TYPE, "Accept": "application/json", **origin_headers(base)}
    declared = GiB
    expected = 403
    if case != "no session":
        browser = Browser(base).login()
        headers["Cookie"] = browser.cookie
        if case == "over the size limits":
            headers["X-CSRF-Token"] = browser.token
            declared = 3 * GiB  # production.ini: 2 GiB in all, plus fields and framing
            expected = 413
    written = io_written(stack.pids())
    answer, sent = send_until_answered(base, headers, declared)
    assert answer.startswith(f"HTTP/1.1 {expected} ".encode()), answer[:300]
    if front == "nginx" and expected == 413:
        assert b"Server: nginx" in answer  # client_max_body_size: nginx refuses first
    else:
        code = json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"]
        assert code == ("total_too_large" if expected == 413 else "csrf_token_missing")
    assert sent < MOST_SENT_BEFORE_REFUSAL, f"{sent / MiB:.0f} MiB sent before the answer"
    assert io_written(stack.pids()) - written < MiB
    assert list((stack.upload_dir / ".tmp").glob("*")) == []


@pytest.mark.parametrize("front", FRONTS)
def test_200_mib_upload_is_written_once(stack: Stack, front: str) -> None:
    base = base_of(stack, front)
    browser = Browser(base, timeout=120).login()
    size = 200 * MiB
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    for _ in range(size // MiB):
        digest.update(block)
    sock = connect(base, timeout=120)
    body_length = len(file_part_head()) + size + len(tail())
    extra = "".join(f"{k}: {v}\r\n" for k, v in origin_headers(base).items())
    head = (f"POST /upFile HTTP/1.1\r\nHost: {host_of(base)}\r\nContent-Type: {CONTENT_TYPE}\r\n"
            f"Content-Length: {body_length}\r\nCookie: {browser.cookie}\r\nX-CSRF-Token: {browser.token}\r\n"
            f"{extra}Accept: application/json\r\nConnection: close\r\n\r\n").encode()
    written = io_written(stack.pids())
    with sock:
        sock.sendall(head + file_part_head())
        for _ in range(size // MiB):
            sock.sendall(block)
        sock.sendall(tail())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    written = io_written(stack.pids()) - written
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
    [info] = json.loads(answer.split(b"\r\n\r\n", 1)[1])["files"]
    assert info["size"] == size and info["sha256"] == digest.hexdigest()
    # The file once, its metadata, and nothing else: no spooled copy anywhere.
    assert size <= written <= size * 1.05, f"{written / MiB:.1f} MiB written for a {size / MiB:.0f} MiB file"
    (stack.upload_dir / info["stored_name"]).unlink()
