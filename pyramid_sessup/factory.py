"""A session factory configured in Python, in Pyramid's style
(``SignedCookieSessionFactory(secret, ...)``), for apps that do not keep their
settings in an INI file."""
from __future__ import annotations

from typing import Any, Callable

from pyramid.request import Request

from .settings import PREFIX, parse_settings
from .stores.base import SessionStore


def SessupSessionFactory(  # noqa: N802 - Pyramid's naming for session factories
    secret: str | list[str],
    *,
    store: str | SessionStore = "memory",
    url: str | None = None,
    file_path: str | None = None,
    name: str = "sessup",
    timeout: int = 1800,
    max_lifetime: int = 0,
    rotate_after: int = 0,
    rotate_grace: int = 30,
    resave: bool = False,
    save_uninitialized: bool = False,
    rolling: bool = False,
    unset: str = "keep",
    lock: bool = False,
    lock_timeout: float = 10.0,
    on_store_error: str = "fail",
    encrypt: bool = False,
    cookie_max_age: int | None = None,
    cookie_httponly: bool = True,
    cookie_secure: str | bool = "auto",
    cookie_samesite: str = "lax",
    cookie_path: str = "/",
    cookie_domain: str | None = None,
    **store_options: Any,
) -> Callable[[Request], Any]:
    """A Pyramid session factory: ``config.set_session_factory(SessupSessionFactory("s3cr3t..."))``.

    Every argument is checked exactly as its ``sessup.session.*`` setting is
    (docs/configuration.md), and a bad one raises
    :class:`pyramid.exceptions.ConfigurationError` naming it.

    ``secret``
        One secret, or several (the first signs, all verify: rotation).  Required.
    ``store``
        ``memory`` (development), ``file`` (needs ``file_path``), ``redis`` or
        ``postgresql`` (need ``url``), or a :class:`~pyramid_sessup.stores.base.SessionStore`
        instance.  Default: ``memory``.
    ``url``
        Location of the redis or postgresql store.  Default: none.
    ``file_path``
        Directory of the file store.  Default: none.
    ``name``
        Cookie name.  Default: ``sessup``.
    ``timeout``
        Idle timeout in seconds, enforced server-side.  Default: 1800.
    ``max_lifetime``
        Absolute lifetime in seconds: an older session ends on its next request,
        however active.  0: none.  Default: 0.
    ``rotate_after`` / ``rotate_grace``
        Seconds after which a session's ID changes by itself (0: never), and how
        long requests still carrying the old ID are served the same session.
        Default: 0 / 30.
    ``resave``
        Rewrite the session on every request that loads it.  Default: False.
    ``save_uninitialized``
        Store new sessions nothing was written to.  Default: False.
    ``rolling``
        Re-send the cookie with a fresh expiry on every response.  Default: False.
    ``unset``
        ``keep`` or ``destroy`` a session emptied with ``clear()``.  Default: ``keep``.
    ``lock`` / ``lock_timeout``
        Serialize a session's requests; seconds to wait.  Default: False / 10.
    ``on_store_error``
        ``fail`` (503) or ``anonymous`` when the store is down.  Default: ``fail``.
    ``encrypt``
        Encrypt each stored session value (AES-GCM, keys derived from ``secret``;
        needs the ``encrypt`` extra); a ``store`` instance is wrapped.  Default: False.
    ``cookie_max_age``
        Seconds, or None for a browser-session cookie.  Default: None.
    ``cookie_httponly`` / ``cookie_secure`` / ``cookie_samesite`` / ``cookie_path`` / ``cookie_domain``
        Cookie attributes.  Default: True / ``auto`` / ``lax`` / ``/`` / none.
    ``store_options``
        Any other ``sessup.session.*`` key, by its name after ``session.`` with
        dots as underscores (``key_prefix``, ``table``, ``pool_size``,
        ``users_record_address``...).
    """
    from .session import session_factory_from_values
    from .stores import encrypted_if_configured, make_store

    instance = store if isinstance(store, SessionStore) else None
    session = {
        "secret": " ".join(secret) if isinstance(secret, (list, tuple)) else secret,
        "store": "memory" if instance is not None else store,
        "url": url, "file.path": file_path, "name": name, "timeout": timeout,
        "max_lifetime": max_lifetime, "rotate_after": rotate_after, "rotate_grace": rotate_grace, "resave": resave,
        "save_uninitialized": save_uninitialized, "rolling": rolling, "unset": unset, "lock": lock,
        "lock_timeout": lock_timeout, "on_store_error": on_store_error, "encrypt": encrypt,
        "cookie.max_age": cookie_max_age, "cookie.httponly": cookie_httponly,
        "cookie.secure": str(cookie_secure).lower() if isinstance(cookie_secure, bool) else cookie_secure,
        "cookie.samesite": cookie_samesite, "cookie.path": cookie_path, "cookie.domain": cookie_domain,
        **{key.replace("_", ".", 1) if key.startswith(("cookie_", "users_")) else key: value
           for key, value in store_options.items()},
    }
    settings = {f"{PREFIX}session.{key}": value for key, value in session.items() if value is not None}
    values = parse_settings(settings, environ={})
    return session_factory_from_values(
        values, encrypted_if_configured(values, instance) if instance is not None else make_store(values))
