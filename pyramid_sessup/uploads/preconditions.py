"""Downloads' conditional and range requests where WebOb departs from RFC 9110.

WebOb's ``conditional_response`` serves ``GET /uploads/<name>`` with ETag,
``If-None-Match``, ``If-Modified-Since`` and single byte ranges.  Four cases
it gets wrong are settled here, before it runs:

* ``If-None-Match: *`` matches any current representation (RFC 9110
  section 13.1.2), so a ``GET`` or ``HEAD`` of an existing file answers 304;
  WebOb treats ``*`` as no header and sends the whole file.
* ``Range: bytes=-0`` asks for the last zero bytes: a suffix range is
  satisfiable only with a non-zero length (section 14.1.1), so the answer is
  416 with ``Content-Range: bytes */<size>``; WebOb reads it as ``0-`` and
  sends the whole file as 206.
* Several ranges (``bytes=0-1,5-6``) are not supported: the header is ignored
  and the whole file sent (200), which section 14.2 allows; WebOb parses only
  part of such a header.
* ``Range`` on ``HEAD`` is ignored (section 14.2: only ``GET`` defines range
  handling).
"""
from __future__ import annotations

import re

from pyramid.request import Request
from pyramid.response import Response

#: A suffix range of length zero, the only range-spec of the header.
_SUFFIX_ZERO = re.compile(r"\s*bytes\s*=\s*-\s*0+\s*\Z", re.IGNORECASE)

#: Headers a 304 or 416 keeps from the full answer (RFC 9110 section 15.4.5).
_KEPT = ("ETag", "Last-Modified", "Cache-Control", "Vary", "X-Content-Type-Options", "Content-Security-Policy",
         "Accept-Ranges")


def _replace(response: Response, status: int, body: bytes = b"") -> Response:
    close = getattr(response.app_iter, "close", None)
    if close is not None:
        close()
    answer = Response(status=status, body=body)
    answer.content_type = "text/plain" if body else None  # type: ignore[assignment]
    for name in _KEPT:
        value = response.headers.get(name)
        if value is not None:
            answer.headers[name] = value
    return answer


def rfc9110_download(request: Request, response: Response, size: int) -> Response:
    """The answer to send for ``response`` (a full download of ``size`` bytes
    with ``conditional_response`` on): itself, or a 304 or 416 in its place.
    May drop the request's ``Range`` header so that WebOb ignores it."""
    method = request.method
    if method not in ("GET", "HEAD"):
        return response
    if (request.headers.get("If-None-Match") or "").strip() == "*":
        return _replace(response, 304)
    raw = request.environ.get("HTTP_RANGE")
    if raw is None:
        return response
    if method == "HEAD" or "," in raw:
        del request.environ["HTTP_RANGE"]
        return response
    if _SUFFIX_ZERO.match(raw) and response in request.if_range:
        answer = _replace(response, 416, f"Requested range not satisfiable: {raw.strip()}\n".encode("ascii", "replace"))
        answer.headers["Content-Range"] = f"bytes */{size}"
        return answer
    return response
