"""Strict parsing of every ``sessup.*`` setting.

One table (:data:`PARAMS`) names each key, its converter, its default and its
meaning; :func:`parse_settings` applies it.  An unknown ``sessup.*`` key, a
value of the wrong type, or a combination that cannot work stops start-up with
a :class:`pyramid.exceptions.ConfigurationError` naming the key.  The docs'
configuration reference is generated from the same table, so they cannot drift.
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Callable, Mapping

from pyramid.exceptions import ConfigurationError

PREFIX = "sessup."

#: Secrets that ship in the repository's INI files.  ``sessup.production``
#: refuses them, so a copied development.ini cannot reach production unchanged.
DEVELOPMENT_SECRETS = frozenset(
    {
        "dev-secret-change-me-0123456789abcdef",
        "testing-secret-not-for-production-0123456789",
    }
)

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class _Invalid(ValueError):
    """Raised by a converter; the message says what was expected."""


def as_bool(value: Any) -> bool:
    """``true/yes/on/1`` or ``false/no/off/0`` (any case); nothing else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _Invalid("expected true or false")


def _int_converter(minimum: int | None = None, optional: bool = False) -> Callable[[Any], int | None]:
    def convert(value: Any) -> int | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if optional:
                return None
            raise _Invalid("a whole number is required")
        if isinstance(value, bool):
            raise _Invalid("expected a whole number")
        try:
            number = int(str(value).strip().replace("_", ""))
        except ValueError:
            raise _Invalid("expected a whole number") from None
        if minimum is not None and number < minimum:
            raise _Invalid(f"must be at least {minimum}")
        return number

    return convert


def _float_converter(minimum: float = 0.0) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise _Invalid("expected a number") from None
        if number < minimum or number != number:
            raise _Invalid(f"must be a number of at least {minimum:g}")
        return number

    return convert


def _choice(*choices: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise _Invalid("expected one of: " + ", ".join(choices))
        return text

    return convert


def _text(optional: bool = True) -> Callable[[Any], str | None]:
    def convert(value: Any) -> str | None:
        text = "" if value is None else str(value).strip()
        if not text:
            if optional:
                return None
            raise _Invalid("a value is required")
        if any(ch in text for ch in ";,\r\n\x00"):
            # These would inject cookie attributes or break headers.
            raise _Invalid("must not contain ';', ',', control characters or newlines")
        return text

    return convert


def _words(value: Any) -> tuple[str, ...]:
    return tuple(str(value or "").split())


def _extensions(value: Any) -> tuple[str, ...]:
    words = [w.lower().lstrip(".") for w in str(value or "").replace(",", " ").split()]
    for word in words:
        if not word.isalnum() or len(word) > 16:
            raise _Invalid(f"{word!r} is not a plain extension like 'png'")
    return tuple(words)


def _types(value: Any) -> tuple[str, ...]:
    words = [w.lower() for w in str(value or "").replace(",", " ").split()]
    for word in words:
        if word.count("/") != 1:
            raise _Invalid(f"{word!r} is not a media type like 'image/png' or 'image/*'")
    return tuple(words)


def _path(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if "\x00" in text:
        raise _Invalid("must not contain NUL")
    return os.path.abspath(os.path.expanduser(text))


def _cookie_name(value: Any) -> str:
    text = str(value or "").strip()
    # RFC 6265 token characters only.
    allowed = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    if not text or any(ch not in allowed for ch in text):
        raise _Invalid("must be a cookie token (letters, digits, '-', '_', '.')")
    return text


def _cookie_path(value: Any) -> str:
    text = _text(optional=False)(value or "/")
    assert text is not None
    if not text.startswith("/"):
        raise _Invalid("must start with '/'")
    return text


def _url_prefix(value: Any) -> str:
    text = _cookie_path(value)
    return text.rstrip("/") or "/"


def _route_path(value: Any) -> str | None:
    """A route's path, or empty to leave the route out."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if not text.startswith("/") or any(ch in text for ch in "{}?#%\\ \t\r\n\x00"):
        raise _Invalid("must be a plain path starting with '/' (no braces, '?', '#', '%' or spaces)")
    return text.rstrip("/") or "/"


def _public_url(value: Any) -> str | None:
    """``https://host[:port][/path]``: the base of every absolute URL the add-on emits."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment \
            or any(ch in text for ch in " \t\r\n\x00\"'<>\\"):
        raise _Invalid("expected an absolute http(s) URL such as https://example.com/app")
    return text.rstrip("/")


def _endpoint_url(value: Any) -> str | None:
    """``http(s)://host[:port]``: an S3-compatible service (MinIO, Ceph RGW, R2...)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment \
            or any(ch in text for ch in " \t\r\n\x00\"'<>\\"):
        raise _Invalid("expected an http(s) URL such as https://s3.example.com:9000")
    return text.rstrip("/")


def _bucket(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    # S3's rules (3-63 of a-z 0-9 . -) plus the upper case and _ of older buckets;
    # never a character that could change the request's path.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]", text):
        raise _Invalid("expected a bucket name: 3 to 63 letters, digits, '.', '-' or '_'")
    return text


def _key_prefix(value: Any) -> str:
    """A key prefix such as ``uploads/`` (a trailing ``/`` is added; empty: the bucket's root)."""
    text = "" if value is None else str(value).strip()
    if not text:
        return ""
    if text.startswith("/") or any(seg in (".", "..") for seg in text.split("/")) \
            or not re.fullmatch(r"[A-Za-z0-9!_.*'()/-]+", text) or "//" in text:
        raise _Invalid("expected a key prefix of letters, digits and !_.*'()-, in /-separated "
                       "segments (no leading /, no . or .. segment), e.g. uploads/")
    return text if text.endswith("/") else text + "/"


def _credential(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if any(ord(ch) < 33 or ord(ch) > 126 for ch in text):
        raise _Invalid("must be printable ASCII without spaces")
    return text
def _callables(value: Any) -> tuple[Callable[..., Any], ...]:
    """Whitespace-separated dotted names (``pkg.mod:func`` or ``pkg.mod.func``),
    imported now so that a typo stops start-up."""
    from pyramid.path import DottedNameResolver

    resolved = []
    for name in str(value or "").split():
        try:
            obj = DottedNameResolver().resolve(name)
        except (ImportError, ValueError, AttributeError) as exc:
            raise _Invalid(f"cannot import {name!r} ({exc})") from None
        if not callable(obj):
            raise _Invalid(f"{name!r} is not callable")
        resolved.append(obj)
    return tuple(resolved)


def _callable(value: Any) -> Callable[..., Any] | None:
    found = _callables(value)
    if len(found) > 1:
        raise _Invalid("expected one dotted name")
    return found[0] if found else None


def _scanner_url(value: Any) -> str | None:
    """``unix:///run/clamav/clamd.ctl`` or ``tcp://host:port``."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if text.startswith("unix://"):
        if not text[len("unix://"):].startswith("/"):
            raise _Invalid("a unix socket URL needs an absolute path: unix:///run/clamav/clamd.ctl")
        return text
    if text.startswith("tcp://"):
        host, sep, port = text[len("tcp://"):].rstrip("/").rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _Invalid("expected tcp://host:port")
        return text
    raise _Invalid("expected unix:///path/to/clamd.ctl or tcp://host:port")


@dataclass(frozen=True)
class Param:
    """One ``sessup.*`` key: its converter, its default and its meaning."""

    key: str
    convert: Callable[[Any], Any]
    default: Any
    type: str
    doc: str
    #: A credential: its value never appears in an error message or a repr.
    sensitive: bool = False


KiB = 1024
MiB = 1024 * KiB

#: Every key pyramid_sessup accepts, without the ``sessup.`` prefix.
PARAMS: tuple[Param, ...] = (
    Param("production", as_bool, False, "bool",
          "Refuse to start without a secret, with a development secret, or with the memory store."),
    Param("public_url", _public_url, None, "URL or empty",
          "Base of the absolute URLs the add-on emits (e.g. https://example.com/app). Empty: it emits "
          "paths (SCRIPT_NAME, route prefix, route), never a URL built from the request's Host header."),
    Param("retry_after", _int_converter(0), 5, "seconds", "Retry-After of every 503 (and 429) answer."),
    # -- routes (each group is its own include; empty leaves a route out) -----------------
    Param("routes.csrf", _route_path, "/csrf", "path or empty",
          "GET: a CSRF token for script clients (pyramid_sessup.session_api)."),
    Param("routes.session", _route_path, "/session", "path or empty",
          "GET: count a view, as express-session's example (pyramid_sessup.session_api)."),
    Param("routes.session_info", _route_path, "/session/info", "path or empty",
          "GET: the session's views, created time and expiry (pyramid_sessup.session_api)."),
    Param("routes.session_regenerate", _route_path, "/session/regenerate", "path or empty",
          "POST (CSRF-checked): new session ID, same data (pyramid_sessup.session_api)."),
    Param("routes.session_destroy", _route_path, "/session/destroy", "path or empty",
          "POST (CSRF-checked): destroy the session (pyramid_sessup.session_api)."),
    Param("routes.upload", _route_path, "/upFile", "path or empty",
          "POST: the streaming upload, echoing where each file went (pyramid_sessup.uploads)."),
    Param("routes.tus", _route_path, "/files", "path or empty",
          "The tus resumable-upload endpoint (pyramid_sessup.tus)."),
    # -- sessions -----------------------------------------------------------------------
    Param("session.secret", _words, (), "secrets",
          "Whitespace-separated secrets: the first signs session cookies, all verify "
          "(rotation). Required. The SESSUP_SECRET environment variable overrides it."),
    Param("session.name", _cookie_name, "sessup", "cookie name",
          "Name of the session cookie; the CSRF nonce cookie is this name plus _csrf. A __Host- prefix "
          "(recommended over HTTPS: no sibling subdomain can then plant either cookie) requires "
          "cookie.secure = true, cookie.path = / and no cookie.domain; __Secure- requires secure = true."),
    Param("session.timeout", _int_converter(1), 1800, "seconds",
          "Idle timeout, enforced server-side: a session unused this long is gone."),
    Param("session.max_lifetime", _int_converter(0), 0, "seconds",
          "Absolute lifetime (OWASP's absolute timeout): a session created longer ago than this is ended "
          "on its next request, however active it was: its record is deleted and the cookie cleared. "
          "0: no limit. Otherwise at least timeout (a shorter one would leave the idle timeout nothing "
          "to do). regenerate() and ID rotation keep the creation time."),
    Param("session.rotate_after", _int_converter(0), 0, "seconds",
          "Give a session a new ID once its ID is this old, on its next request, transparently: a new "
          "cookie, the same data and CSRF token (it is not a login). A stolen ID stops working "
          "rotate_grace after the rotation. 0: never (the ID changes only on regenerate())."),
    Param("session.rotate_grace", _int_converter(1), 30, "seconds",
          "After a rotation, requests still carrying the old ID (sent before the new cookie arrived) are "
          "served the same session and write to the new ID for this long; then the old ID is dead. Less "
          "than timeout and than rotate_after."),
    Param("session.resave", as_bool, False, "bool",
          "Rewrite the whole session on every request that loads it, even unchanged. "
          "Off: read-only requests only slide the expiry (touch) and never rewrite data."),
    Param("session.save_uninitialized", as_bool, False, "bool",
          "Store (and send a cookie for) new sessions that nothing was written to."),
    Param("session.rolling", as_bool, False, "bool",
          "Re-send the cookie, with a fresh Max-Age/Expires, on every response that loaded the session."),
    Param("session.unset", _choice("keep", "destroy"), "keep", "keep | destroy",
          "What happens to a session emptied with clear(): keep the empty record, or delete it "
          "and expire the cookie."),
    Param("session.store", _choice("memory", "file", "redis", "postgresql"), "memory",
          "memory | file | redis | postgresql",
          "Where sessions live. memory is per process and lost on restart (development only)."),
    Param("session.file.path", _path, None, "path", "Directory of the file store (required with store = file)."),
    Param("session.url", _text(), None, "URL",
          "Location of the redis or postgresql store, e.g. redis://127.0.0.1:6379/0 or "
          "postgresql://postgres@127.0.0.1:5432/test."),
    Param("session.key_prefix", _text(), "sessup:", "text", "Prefix of the Redis keys."),
    Param("session.table", _text(), "sessup_sessions", "SQL identifier", "PostgreSQL table of the sessions."),
    Param("session.pool_size", _int_converter(1), 20, "count", "Connections kept by the redis/postgresql store."),
    Param("session.connect_timeout", _float_converter(0.01), 2.0, "seconds", "Store connect timeout."),
    Param("session.socket_timeout", _float_converter(0.01), 2.0, "seconds", "Store read/write timeout."),
    Param("session.encrypt", as_bool, False, "bool",
          "Encrypt and authenticate each stored session value (AES-256-GCM, keys derived from "
          "sessup.session.secret; key names are keyed hashes), so a dump of the store, a backup or a "
          "session file reveals no key or value; a tampered value, or one copied from another session, "
          "reads as an absent key. Session IDs, expiry and sizes stay visible. Needs the encrypt extra "
          "(cryptography)."),
    Param("session.lock", as_bool, False, "bool",
          "Serialize the requests of one session (PHP-style): each request holds the session's "
          "lock from load to response, so concurrent read-modify-write loses nothing."),
    Param("session.lock_timeout", _float_converter(0.01), 10.0, "seconds",
          "How long a request waits for the session lock before answering 503."),
    Param("session.on_store_error", _choice("fail", "anonymous"), "fail", "fail | anonymous",
          "Store down: fail answers 503 with Retry-After; anonymous serves the request without a session."),
    Param("session.cookie.max_age", _int_converter(0, optional=True), None, "seconds or empty",
          "Cookie lifetime (Max-Age and Expires); empty makes a browser-session cookie."),
    Param("session.cookie.httponly", as_bool, True, "bool", "HttpOnly flag of the session cookie."),
    Param("session.cookie.secure", _choice("true", "false", "auto"), "auto", "true | false | auto",
          "Secure flag; auto sets it exactly when the request is HTTPS (waitress's trusted proxy "
          "headers included)."),
    Param("session.cookie.samesite", _choice("lax", "strict", "none"), "lax", "lax | strict | none",
          "SameSite attribute; none requires secure = true."),
    Param("session.cookie.path", _cookie_path, "/", "path", "Path attribute of the session cookie."),
    Param("session.cookie.domain", _text(), None, "domain", "Domain attribute; empty means host-only."),
    # -- sessions per user (pyramid_sessup.users) -----------------------------------------
    Param("session.users.record_agent", as_bool, True, "bool",
          "Keep the User-Agent (printable characters, at most 256) in a signed-in session's record, "
          "for the list of a user's sessions."),
    Param("session.users.record_address", as_bool, False, "bool",
          "Keep the client address (REMOTE_ADDR, as the server or its trusted proxy set it) in a "
          "signed-in session's record. Off by default: an address is personal data that some sites "
          "must not keep."),
    # Once a minute: "last seen" stays useful to a person while a read-only
    # request still costs one store call (the expiry slide) nearly always.
    Param("session.users.seen_interval", _int_converter(0), 60, "seconds",
          "A signed-in session's \"last seen\" time (and its user index entry) is rewritten at most once "
          "per interval, so read-only requests stay a single touch; 0 writes it on every request. "
          "Capped at the session timeout."),
    # -- uploads ------------------------------------------------------------------------
    Param("upload.path", _path, None, "path",
          "Upload directory. Empty: the upload routes are not added (sessions only)."),
    Param("upload.url_prefix", _url_prefix, "/uploads", "URL path", "Where stored files are served."),
    Param("upload.field", _text(optional=False), "inputFile", "field name",
          "Name of the file input of POST /upFile; * accepts files in any field."),
    Param("upload.max_file_size", _int_converter(0), 100 * MiB, "bytes", "Largest file accepted."),
    Param("upload.max_total_size", _int_converter(0), 1024 * MiB, "bytes", "Largest sum of file sizes per request."),
    Param("upload.max_files", _int_converter(1), 100, "count", "Most files in one request."),
    Param("upload.max_fields", _int_converter(0), 100, "count", "Most text fields in one request."),
    Param("upload.max_field_size", _int_converter(1), 64 * KiB, "bytes", "Largest text field value."),
    Param("upload.max_header_size", _int_converter(256), 8 * KiB, "bytes", "Largest header block of one part."),
    Param("upload.allowed_extensions", _extensions, (), "extensions",
          "If set, only files with these extensions are accepted (e.g. 'png jpg pdf')."),
    Param("upload.allowed_types", _types, (), "media types",
          "If set, only files of these types are accepted ('image/*' allowed)."),
    Param("upload.require_csrf", as_bool, True, "bool", "Require a CSRF token on uploads."),
    Param("upload.fsync", as_bool, False, "bool", "fsync each stored file and its directory before answering."),
    # 1 MiB: gunicorn's body reader copies what it holds on every read, so 256 KiB
    # reads of a 1 GiB upload took 1.6x as long (bench/README.md); the memory
    # cost is one such block per upload in progress.
    Param("upload.chunk_size", _int_converter(4 * KiB), 1024 * KiB, "bytes",
          "Bytes read from the request body per step of the streaming parser."),
    Param("demo.pages", as_bool, True, "bool",
          "The demo application's pages (/, /upload, /ajax, /session/page, /account/..., /tus-demo, /static, "
          "/favicon.ico). false leaves only the add-on's routes (/csrf, /session..., /upFile, "
          "/uploads/..., /files/); production.ini sets it false. Host applications never get the pages."),
    Param("static.path", _path, None, "path",
          "Directory served at /static by the demo app; empty serves the package's assets "
          "(pyramid_sessup:static/, the project's static/ folder)."),
    Param("upload.tus_expiry", _int_converter(1), 86400, "seconds",
          "An unfinished tus upload (/files/) not continued for this long expires: 410, then swept "
          "(start-up and sweep function); finished uploads' records are dropped after it too."),
    Param("upload.tus_max_chunk_size", _int_converter(1, optional=True), None, "bytes or empty",
          "Largest body of one tus PATCH (or creation-with-upload POST); empty: only the file size limits."),
    Param("upload.tus_max_parts", _int_converter(1), 32, "count",
          "Most partial uploads one final tus upload may join (concatenation, e.g. parallel uploads); "
          "the joined file is held to upload.max_file_size like any other."),
    Param("upload.temp_max_age", _int_converter(1), 3600, "seconds",
          "Temporary files older than this are swept (start-up, and the sweep command); kept "
          "form uploads expire after it too."),
    # -- object storage (sessup.upload.storage = s3) -----------------------------------
    Param("upload.storage", _choice("local", "s3"), "local", "local | s3",
          "Where uploaded files are stored: local (the directory sessup.upload.path) or s3 (a bucket of "
          "an S3-compatible service: AWS S3, MinIO, Ceph RGW, Cloudflare R2; needs the s3 extra)."),
    Param("upload.s3.bucket", _bucket, None, "bucket name", "The bucket (required with storage = s3)."),
    Param("upload.s3.prefix", _key_prefix, "", "key prefix",
          "Keys of the add-on's objects start with this (e.g. uploads/; a trailing / is added). Stored files "
          "are <prefix><name>; files still being received or checked are <prefix>.tmp/<id>."),
    Param("upload.s3.endpoint_url", _endpoint_url, None, "URL or empty",
          "The service's URL, e.g. http://127.0.0.1:9000 for MinIO or "
          "https://ACCOUNT.r2.cloudflarestorage.com; empty: AWS (from the region)."),
    Param("upload.s3.region", _text(), None, "region or empty",
          "The bucket's region (us-east-1, or auto for R2); empty: the AWS_REGION / AWS config default."),
    Param("upload.s3.addressing_style", _choice("auto", "path", "virtual"), "auto", "auto | path | virtual",
          "Bucket in the host name (virtual) or in the path (path: MinIO and Ceph RGW without "
          "wildcard DNS); auto lets the client choose."),
    Param("upload.s3.access_key_id", _credential, None, "text or empty",
          "Access key; empty: the client's usual chain (AWS_ACCESS_KEY_ID, AWS_PROFILE and ~/.aws, "
          "instance or container roles). Never logged.", sensitive=True),
    Param("upload.s3.secret_access_key", _credential, None, "text or empty",
          "Secret of the access key; set both or neither. Prefer the environment "
          "(AWS_SECRET_ACCESS_KEY) to the INI file. Never logged.", sensitive=True),
    Param("upload.s3.part_size", _int_converter(5 * MiB), 8 * MiB, "bytes",
          "Size of each part of a multipart upload (at least 5 MiB, S3's minimum): the memory one file "
          "being received holds. Files smaller than this go up in one request."),
    Param("upload.s3.download", _choice("stream", "redirect"), "stream", "stream | redirect",
          "GET on a stored file: stream it from the bucket through the application, or redirect to a "
          "presigned URL of the bucket (forced attachment, the stored type) valid for url_expiry."),
    Param("upload.s3.url_expiry", _int_converter(1), 60, "seconds",
          "Lifetime of the presigned URLs of download = redirect."),
    # -- checks before a file is stored (uploads/verify.py, clamav.py, quota.py) ----------
    Param("upload.content_check", _choice("auto", "always", "off"), "auto", "auto | always | off",
          "Check each file's first bytes (libmagic) against the type its extension claims; a "
          "mismatch is 415 naming the file. auto: only when allowed_extensions or allowed_types is set."),
    Param("upload.verifiers", _callables, (), "dotted names",
          "Functions called as f(file, request) with each still-temporary file before it is stored "
          "(e.g. mypkg.checks:no_pdf_javascript); raising UploadRejected (or any UploadError) refuses "
          "the upload."),
    Param("upload.clamav", _scanner_url, None, "URL or empty",
          "clamd to scan each file with before it is stored (INSTREAM): unix:///run/clamav/clamd.ctl "
          "or tcp://host:port. An infected file is 422 naming the file. Empty: no scanning."),
    Param("upload.clamav_timeout", _float_converter(0.1), 30.0, "seconds",
          "How long clamd may stay silent (connect, each block sent, the verdict; the verdict gets one "
          "more second per MiB of the file) before the scan counts as failed."),
    Param("upload.clamav_on_error", _choice("fail", "allow"), "fail", "fail | allow",
          "clamd unreachable or too slow: fail answers 503 with Retry-After and stores nothing; allow "
          "stores the file unscanned (and logs a warning)."),
    Param("upload.quota_files", _int_converter(0, optional=True), None, "count or empty",
          "Most files one visitor may store per quota_window (/upFile, the form, tus creations; "
          "empty files count). Over it: 429 with Retry-After. Empty: no limit."),
    Param("upload.quota_bytes", _int_converter(0, optional=True), None, "bytes or empty",
          "Most bytes one visitor may store per quota_window (a tus upload counts its Upload-Length "
          "when created). Over it: 429 with Retry-After. Empty: no limit."),
    Param("upload.quota_window", _int_converter(1), 3600, "seconds",
          "The rolling window of the quotas, counted atomically in the session store (in 60 slices)."),
    Param("upload.quota_key", _callable, None, "dotted name or empty",
          "A function f(request) returning the keys an upload counts against (it must be under every "
          "key's quota). Empty: the visitor's session when it has one, else the client address "
          "(pyramid_sessup.uploads.quota:visitor_keys)."),
    Param("upload.quota_address_factor", _int_converter(0), 10, "count",
          "A visitor who is not signed in is also charged to the client address, whose quota is this "
          "many times quota_files and quota_bytes: sessions and visitor cookies can be had for free, an "
          "address cannot, so many anonymous identities from one address still share one bound. "
          "0: the address is charged only for visitors with neither a session nor a visitor cookie."),
)

# -- the typed result -------------------------------------------------------------------
# One frozen dataclass per part; a field per PARAMS key (the part's name dropped,
# further dots as underscores: session.cookie.max_age -> session.cookie_max_age).
# tests/session/test_settings.py checks that every key has its field.


@dataclass(frozen=True)
class SessionSettings:
    """``sessup.session.*``: see :data:`PARAMS` for each meaning."""

    secret: tuple[str, ...]
    name: str
    timeout: int
    max_lifetime: int
    rotate_after: int
    rotate_grace: int
    resave: bool
    save_uninitialized: bool
    rolling: bool
    unset: str
    store: str
    file_path: str | None
    url: str | None
    key_prefix: str
    table: str
    pool_size: int
    connect_timeout: float
    socket_timeout: float
    encrypt: bool
    lock: bool
    lock_timeout: float
    on_store_error: str
    cookie_max_age: int | None
    cookie_httponly: bool
    cookie_secure: str
    cookie_samesite: str
    cookie_path: str
    cookie_domain: str | None
    users_record_agent: bool
    users_record_address: bool
    users_seen_interval: int


@dataclass(frozen=True)
class UploadSettings:
    """``sessup.upload.*``: see :data:`PARAMS` for each meaning."""

    path: str | None
    url_prefix: str
    field: str
    max_file_size: int
    max_total_size: int
    max_files: int
    max_fields: int
    max_field_size: int
    max_header_size: int
    allowed_extensions: tuple[str, ...]
    allowed_types: tuple[str, ...]
    require_csrf: bool
    fsync: bool
    chunk_size: int
    tus_expiry: int
    tus_max_chunk_size: int | None
    tus_max_parts: int
    temp_max_age: int
    content_check: str
    verifiers: tuple[Callable[..., Any], ...]
    clamav: str | None
    clamav_timeout: float
    clamav_on_error: str
    quota_files: int | None
    quota_bytes: int | None
    quota_window: int
    quota_key: Callable[..., Any] | None
    quota_address_factor: int
    storage: str
    s3_bucket: str | None
    s3_prefix: str
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_addressing_style: str
    s3_part_size: int
    s3_download: str
    s3_url_expiry: int
    # Credentials: never in a repr (settings may be logged).
    s3_access_key_id: str | None = dc_field(repr=False)
    s3_secret_access_key: str | None = dc_field(repr=False)

    @property
    def enabled(self) -> bool:
        """Whether uploads are configured: an upload directory, or object storage."""
        return self.storage == "s3" or bool(self.path)


@dataclass(frozen=True)
class RouteSettings:
    """``sessup.routes.*``: each route group's paths; None leaves the route out."""

    csrf: str | None
    session: str | None
    session_info: str | None
    session_regenerate: str | None
    session_destroy: str | None
    upload: str | None
    tus: str | None


#: Parts of the settings, by the first word of their keys.
_PARTS: dict[str, type] = {"session": SessionSettings, "upload": UploadSettings, "routes": RouteSettings}


@dataclass(frozen=True)
class SessupSettings:
    """Every ``sessup.*`` setting, typed: what :func:`parse_settings` returns and
    what ``request.registry.sessup_settings`` holds."""

    production: bool
    public_url: str | None
    retry_after: int
    demo_pages: bool
    static_path: str | None
    session: SessionSettings
    upload: UploadSettings
    routes: RouteSettings

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> SessupSettings:
        """Group the converted ``values`` (by key without prefix) into the parts."""
        parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
        top: dict[str, Any] = {}
        for key, value in values.items():
            part, _, rest = key.partition(".")
            if part in _PARTS:
                parts[part][rest.replace(".", "_")] = value
            else:
                top[key.replace(".", "_")] = value
        return cls(**top, **{name: _PARTS[name](**fields) for name, fields in parts.items()})


def field_name(key: str) -> str:
    """The attribute path of a key without prefix: ``session.cookie.max_age`` -> ``session.cookie_max_age``."""
    part, _, rest = key.partition(".")
    return f"{part}.{rest.replace('.', '_')}" if part in _PARTS else key.replace(".", "_")


_BY_KEY = {p.key: p for p in PARAMS}

#: Keys of other session libraries that must not silently configure anything.
_FOREIGN_PREFIXES = ("session.", "beaker.session.")


def _raise_unknown(key: str) -> None:
    candidates = [PREFIX + k for k in _BY_KEY]
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigurationError(f"Unknown setting {key}{hint}")


def parse_settings(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> SessupSettings:
    """Return the typed value of every ``sessup.*`` key (:class:`SessupSettings`).

    ``settings`` is the application's settings dict (INI ``[app:main]``).
    ``environ`` defaults to :data:`os.environ`; ``SESSUP_SECRET`` there
    overrides ``sessup.session.secret``.
    """
    environ = os.environ if environ is None else environ
    for key in settings:
        if key.startswith(_FOREIGN_PREFIXES):
            raise ConfigurationError(
                f"Setting {key} is not read: pyramid_sessup configures Beaker itself; "
                f"use the sessup.session.* keys instead"
            )
        if key.startswith(PREFIX) and key[len(PREFIX):] not in _BY_KEY:
            _raise_unknown(key)

    values: dict[str, Any] = {}
    for param in PARAMS:
        raw = settings.get(PREFIX + param.key, None)
        if param.key == "session.secret" and environ.get("SESSUP_SECRET", "").strip():
            raw = environ["SESSUP_SECRET"]
        if raw is None:
            values[param.key] = param.default
            continue
        try:
            values[param.key] = param.convert(raw)
        except _Invalid as exc:
            shown = "(hidden)" if param.sensitive else repr(raw)
            raise ConfigurationError(f"Invalid value {shown} for {PREFIX}{param.key}: {exc}") from None
    _check_combinations(values)
    return SessupSettings.from_values(values)


def _check_combinations(values: dict[str, Any]) -> None:
    secrets = values["session.secret"]
    if not secrets:
        raise ConfigurationError(
            "sessup.session.secret is required (or set the SESSUP_SECRET environment variable)"
        )
    if values["production"]:
        weak = [s for s in secrets if s in DEVELOPMENT_SECRETS or len(s) < 32]
        if weak:
            raise ConfigurationError(
                "sessup.session.secret holds a development or short secret (under 32 characters); "
                "production needs SESSUP_SECRET set to a long random value"
            )
        if values["session.store"] == "memory":
            raise ConfigurationError("sessup.session.store = memory loses sessions on restart; "
                                     "production needs file, redis or postgresql")
    _check_cookie_prefix(values)
    _check_lifetimes(values)
    if values["session.cookie.samesite"] == "none" and values["session.cookie.secure"] != "true":
        raise ConfigurationError("sessup.session.cookie.samesite = none requires sessup.session.cookie.secure = true")
    store = values["session.store"]
    if store == "file" and not values["session.file.path"]:
        raise ConfigurationError("sessup.session.store = file requires sessup.session.file.path")
    if store in ("redis", "postgresql"):
        url = values["session.url"] or ""
        schemes = {"redis": ("redis://", "rediss://", "unix://"), "postgresql": ("postgresql://", "postgres://")}
        if not url.startswith(schemes[store]):
            raise ConfigurationError(
                f"sessup.session.store = {store} requires sessup.session.url starting with "
                + " or ".join(schemes[store])
            )
    if values["upload.max_total_size"] < values["upload.max_file_size"]:
        raise ConfigurationError("sessup.upload.max_total_size must be at least sessup.upload.max_file_size")
    if values["upload.storage"] == "s3":
        if not values["upload.s3.bucket"]:
            raise ConfigurationError("sessup.upload.storage = s3 requires sessup.upload.s3.bucket")
        if values["upload.max_file_size"] > values["upload.s3.part_size"] * 10_000:
            raise ConfigurationError("sessup.upload.max_file_size needs more than 10,000 parts (S3's limit) of "
                                     "sessup.upload.s3.part_size: raise the part size")
        if bool(values["upload.s3.access_key_id"]) != bool(values["upload.s3.secret_access_key"]):
            raise ConfigurationError("sessup.upload.s3.access_key_id and sessup.upload.s3.secret_access_key "
                                     "go together: set both, or neither (the client's usual chain)")


def _check_lifetimes(values: dict[str, Any]) -> None:
    """The idle timeout, the absolute lifetime and ID rotation must fit together."""
    timeout, lifetime = values["session.timeout"], values["session.max_lifetime"]
    rotate, grace = values["session.rotate_after"], values["session.rotate_grace"]
    if lifetime and lifetime < timeout:
        raise ConfigurationError(f"sessup.session.max_lifetime = {lifetime} is shorter than sessup.session.timeout "
                                 f"= {timeout}: use 0 (no limit) or at least the timeout (and lower the timeout "
                                 "if sessions must end sooner)")
    if not rotate:
        return
    if grace >= timeout:
        raise ConfigurationError(f"sessup.session.rotate_grace = {grace} must be less than sessup.session.timeout "
                                 f"= {timeout}")
    if grace >= rotate:
        raise ConfigurationError(f"sessup.session.rotate_grace = {grace} must be less than "
                                 f"sessup.session.rotate_after = {rotate}")
    if lifetime and rotate >= lifetime:
        raise ConfigurationError(f"sessup.session.rotate_after = {rotate} must be less than "
                                 f"sessup.session.max_lifetime = {lifetime}: the session would end before "
                                 "its ID ever rotated")


def _check_cookie_prefix(values: dict[str, Any]) -> None:
    """Browsers drop a ``__Host-``/``__Secure-`` cookie set without the attributes
    its prefix demands: refuse such a configuration at start-up, not in production."""
    name = values["session.name"]
    lowered = name.lower()  # browsers match the prefixes in any case
    if lowered.startswith("__host-"):
        if values["session.cookie.secure"] != "true":
            raise ConfigurationError(f"sessup.session.name = {name} (a __Host- cookie) requires "
                                     "sessup.session.cookie.secure = true")
        if values["session.cookie.path"] != "/":
            raise ConfigurationError(f"sessup.session.name = {name} (a __Host- cookie) requires "
                                     "sessup.session.cookie.path = /")
        if values["session.cookie.domain"]:
            raise ConfigurationError(f"sessup.session.name = {name} (a __Host- cookie) requires "
                                     "sessup.session.cookie.domain to be empty")
    elif lowered.startswith("__secure-") and values["session.cookie.secure"] != "true":
        raise ConfigurationError(f"sessup.session.name = {name} (a __Secure- cookie) requires "
                                 "sessup.session.cookie.secure = true")


def reference_markdown() -> str:
    """The configuration reference (every key, type, default, meaning) as a Markdown table."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for p in PARAMS:
        default = p.default
        if isinstance(default, tuple):
            default = " ".join(default) or "(empty)"
        elif default is None:
            default = "(empty)"
        elif isinstance(default, bool):
            default = str(default).lower()
        cells = [f"`{PREFIX}{p.key}`", p.type, f"`{default}`", p.doc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


_BEGIN = "<!-- BEGIN generated reference: python -m pyramid_sessup.settings docs/configuration.md -->"
_END = "<!-- END generated reference -->"


def render_reference_into(text: str) -> str:
    """``text`` with the part between the reference markers replaced by :func:`reference_markdown`."""
    head, _, rest = text.partition(_BEGIN)
    _, _, tail = rest.partition(_END)
    return f"{head}{_BEGIN}\n{reference_markdown()}{_END}{tail}"


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    import sys

    target = sys.argv[1]
    with open(target, encoding="utf-8") as f:
        current = f.read()
    with open(target, "w", encoding="utf-8") as f:
        f.write(render_reference_into(current))
