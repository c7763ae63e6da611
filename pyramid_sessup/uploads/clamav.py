"""Virus scanning with clamd (ClamAV's daemon) before a file is stored.

With ``sessup.upload.clamav = unix:///run/clamav/clamd.ctl`` (or
``tcp://host:port``) every file is streamed to clamd with the ``INSTREAM``
command while it is still temporary: one connection per file, the file sent
in blocks of :data:`BLOCK` bytes (each behind its 4-byte big-endian length,
with ``sendfile``), then a zero length; clamd answers ``stream: OK``,
``stream: <signature> FOUND`` or ``<reason> ERROR``.

* infected: :class:`~pyramid_sessup.exceptions.UploadRejected` (422) naming
  the file and the signature; nothing is stored;
* clamd unreachable, silent for ``sessup.upload.clamav_timeout`` seconds, or
  answering an error (such as a file over its ``StreamMaxLength``):
  :class:`~pyramid_sessup.exceptions.ScannerUnavailable` (503 with
  ``Retry-After``), unless ``sessup.upload.clamav_on_error = allow``, which
  stores the file unscanned and logs a warning.

The protocol is small and stable (clamd's manual page, "INSTREAM"), so it is
spoken here directly rather than through an unmaintained client library.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from pyramid.request import Request

from ..exceptions import ScannerUnavailable, UploadRejected

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import StoredFile
    from .storage import Storage

log = logging.getLogger("pyramid_sessup.uploads")

#: Bytes per INSTREAM block (clamd refuses a block over its StreamMaxLength).
BLOCK = 1024 * 1024
#: Longest answer read from clamd.
MAX_REPLY = 4096
#: Bytes per second clamd is assumed to scan at least, to wait for its verdict
#: on a large file (measured: about 30 MiB/s on two shared cores).
SCAN_RATE = 1024 * 1024


class ScanError(Exception):
    """The scan did not give a verdict: clamd unreachable, silent or failing."""


class ClamdClient:
    """Talks to one clamd.

    ``url``
        ``unix:///path/to/clamd.ctl`` or ``tcp://host:port``.
    ``timeout``
        Seconds any one step (connect, each block sent, the verdict) may take;
        the verdict gets one more second per MiB of the file.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        if url.startswith("unix://"):
            self.family, self.address = socket.AF_UNIX, url[len("unix://"):]
        elif url.startswith("tcp://"):
            host, _, port = url[len("tcp://"):].rstrip("/").rpartition(":")
            self.family, self.address = socket.AF_INET, (host.strip("[]"), int(port))  # type: ignore[assignment]
        else:
            raise ValueError(f"not a clamd URL: {url!r}")

    def _connect(self) -> socket.socket:
        try:
            if self.family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.address)
                except BaseException:
                    sock.close()
                    raise
                return sock
            return socket.create_connection(self.address, timeout=self.timeout)  # type: ignore[arg-type]
        except OSError as exc:
            raise ScanError(f"cannot connect to clamd at {self.url} ({exc.strerror or exc})") from None

    @staticmethod
    def _reply(sock: socket.socket) -> str:
        data = b""
        while not data.endswith(b"\0") and len(data) < MAX_REPLY:
            chunk = sock.recv(MAX_REPLY)
            if not chunk:
                break
            data += chunk
        return data.rstrip(b"\0").decode("utf-8", "replace").strip()

    def ping(self) -> bool:
        """True if clamd answers ``PONG``."""
        try:
            with self._connect() as sock:
                sock.sendall(b"zPING\0")
                return self._reply(sock) == "PONG"
        except (OSError, ScanError):
            return False

    def scan_file(self, path: str) -> str | None:
        """Scan the file at ``path``; return the signature found, or ``None``
        when it is clean.  Raises :class:`ScanError` when there is no verdict."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return self.scan_stream(f, os.fstat(fd).st_size, local=True)

    def scan_stream(self, f: BinaryIO, size: int, *, local: bool = False) -> str | None:
        """:meth:`scan_file` of an open file of ``size`` bytes: a local file
        (``local``: sent with ``sendfile``) or any readable stream, such as a
        temporary object read back from a bucket."""
        with self._connect() as sock:
            try:
                sock.sendall(b"zINSTREAM\0")
                offset = 0
                while offset < size:
                    n = min(BLOCK, size - offset)
                    sock.sendall(struct.pack(">I", n))
                    if local:
                        sent = sock.sendfile(f, offset, n)
                    else:
                        block = _read_exactly(f, n)
                        sock.sendall(block)
                        sent = len(block)
                    if sent != n:
                        raise ScanError("the file changed while it was scanned")
                    offset += n
                sock.sendall(b"\0\0\0\0")
                # clamd is silent while it scans: a large file earns more time.
                sock.settimeout(self.timeout + size / SCAN_RATE)
                reply = self._reply(sock)
            except OSError as exc:
                # clamd closes early on its own errors (size limit): read why, if it said.
                reply = ""
                try:
                    sock.settimeout(0.5)
                    reply = self._reply(sock)
                except OSError:
                    pass
                if not reply.endswith("ERROR"):
                    raise ScanError(f"clamd at {self.url} did not answer ({exc.strerror or exc})") from None
        if reply.endswith(" FOUND"):
            name = reply[: -len(" FOUND")]
            return name.split(": ", 1)[1] if ": " in name else name
        if reply.endswith(": OK"):
            return None
        raise ScanError(f"clamd at {self.url} answered {reply[:200]!r}")


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        block = f.read(n - len(data))
        if not block:
            break
        data += block
    return data


def get_client(request: Request) -> ClamdClient | None:
    """The application's :class:`ClamdClient`, or ``None`` when scanning is off."""
    registry = request.registry
    values = registry.sessup_settings
    url = values.upload.clamav
    if not url:
        return None
    client = getattr(registry, "sessup_clamd", None)
    if client is None or client.url != url:
        client = registry.sessup_clamd = ClamdClient(url, values.upload.clamav_timeout)
    return client


def scan_files(request: Request, files: Sequence[StoredFile], storage: Storage | None = None) -> None:
    """Scan each still-temporary file; raise :class:`UploadRejected` (422) for
    the first infected one and :class:`ScannerUnavailable` (503) when clamd
    gives no verdict (unless ``clamav_on_error = allow``)."""
    client = get_client(request)
    if client is None:
        return
    allow = request.registry.sessup_settings.upload.clamav_on_error == "allow"
    for f in files:
        shown = f.filename or "(unnamed)"
        try:
            path = f.temp_path if storage is None else storage.temp_local_path(f.temp_path)
            if path is not None:
                found = client.scan_file(path)
            else:  # object storage: the temporary object read back from the bucket
                assert storage is not None
                with storage.open_temp_read(f.temp_path) as body:
                    found = client.scan_stream(body, f.size)
        except ScanError as exc:
            if allow:
                log.warning("virus scan failed, file %r stored unscanned (clamav_on_error = allow): %s", shown, exc)
                continue
            log.error("virus scan failed, upload refused with 503: %s", exc)
            raise ScannerUnavailable("The virus scanner is not available; nothing was stored. "
                                     "Try again later.") from None
        if found is not None:
            log.warning("upload refused: virus scanner found %s in %r (%s bytes, sha256 %s)",
                        found, shown, f.size, f.sha256)
            raise UploadRejected(f"File {shown!r} was refused: the virus scanner found {found}; "
                                 f"nothing was stored", filename=shown)
