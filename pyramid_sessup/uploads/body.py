"""Reading a WSGI request body in blocks, honouring ``CONTENT_LENGTH``.

Shared by the multipart pipeline and the tus endpoint, which map the errors
to their own answers.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping


class ShortBody(ConnectionError):
    """The client sent less than it announced, or went away mid-body."""

    def __init__(self, message: str, *, disconnected: bool) -> None:
        super().__init__(message)
        #: True when reading failed (the connection broke), False on a clean short body.
        self.disconnected = disconnected


def body_length(environ: Mapping[str, Any]) -> int:
    """The body's declared length; ``-1`` for a de-chunked body of unknown
    length that the server terminates (read to the end); ``0`` for none.
    Raises :class:`ValueError` for an invalid ``Content-Length``."""
    if environ.get("wsgi.input") is None:
        return 0
    raw = (environ.get("CONTENT_LENGTH") or "").strip()
    if raw:
        if not raw.isdigit():
            raise ValueError("Invalid Content-Length")
        return int(raw)
    return -1 if environ.get("wsgi.input_terminated") else 0


def iter_body(environ: Mapping[str, Any], length: int, block_size: int) -> Iterator[bytes]:
    """Yield ``length`` bytes (see :func:`body_length`) of ``wsgi.input`` in
    blocks of at most ``block_size``; raise :class:`ShortBody` if they do not come."""
    stream = environ.get("wsgi.input")
    remaining = length
    while remaining:
        size = block_size if remaining < 0 else min(block_size, remaining)
        try:
            block = stream.read(size)  # type: ignore[union-attr]
        except OSError as exc:
            raise ShortBody("client went away", disconnected=True) from exc
        if not block:
            if remaining > 0:
                raise ShortBody("body shorter than Content-Length", disconnected=False)
            return
        if remaining > 0:
            remaining -= len(block)
        yield block
