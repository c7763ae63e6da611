"""``use = egg:pyramid_sessup#gunicorn``: gunicorn started by ``pserve`` from an INI.

gunicorn ships its own PasteDeploy runner (``egg:gunicorn#main``); this one
hands every key to it unchanged, and adds the two things an INI cannot say:

``port``
    The port to listen on (with ``host``).  pserve's ``http_port`` variable
    (``pserve production.ini http_port=8080``) overrides it, so one INI serves
    several processes on several ports.  PasteDeploy gives the INI's
    ``[DEFAULT]`` precedence over pserve's variables, so ``%(http_port)s``
    alone could not have a default.

``workers = auto``
    One worker process per core this process may run on.

As ``egg:pyramid_sessup#waitress`` (serve.py), it takes the address before
the application is built: a taken port stops ``pserve`` with one line, and
the address served is logged on the ``pyramid_sessup.serving`` logger at INFO.

Needs the ``production`` extra (``pip install pyramid_sessup[production]``).
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any, Callable, Mapping

from pyramid.exceptions import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_PORT = "6543"


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gunicorn_options(global_conf: Mapping[str, Any], local_conf: Mapping[str, Any]) -> dict[str, Any]:
    """The keys gunicorn's runner receives: ``port`` from ``http_port`` (else
    the INI, else 6543) and ``workers = auto`` as a number."""
    options = dict(local_conf)
    if "bind" in options and ("port" in options or "host" in options or global_conf.get("http_port")):
        raise ConfigurationError("[server:main]: give host and port (http_port overrides port), or bind alone")
    if "bind" not in options:
        options["host"] = options.get("host") or "127.0.0.1"
        options["port"] = str(global_conf.get("http_port") or options.get("port") or DEFAULT_PORT)
    if str(options.get("workers", "")).strip().lower() == "auto":
        options["workers"] = str(cores())
    return options


def gunicorn(app: Any, global_conf: dict[str, Any], **local_conf: Any) -> None:
    """PasteDeploy server runner: serve ``app`` with gunicorn (see the module docstring)."""
    try:
        from gunicorn.app.pasterapp import serve
    except ImportError:
        raise ConfigurationError(
            "use = egg:pyramid_sessup#gunicorn needs gunicorn: pip install 'pyramid_sessup[production]'"
        ) from None
    serve(app, global_conf, **gunicorn_options(global_conf, local_conf))


def _probe(global_conf: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Bind the address once and let it go, so a taken port is one line before
    the application is built (gunicorn itself would retry five times, then log)."""
    if "bind" in options:
        return  # gunicorn's own syntax (unix sockets, several addresses): gunicorn reports
    host, port = str(options["host"]), str(options["port"])
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            probe.bind((host, int(port)))
    except OSError as exc:
        from pyramid_sessup.serve import cannot_listen

        raise cannot_listen(exc, where, port, dict(global_conf)) from None


def gunicorn_factory(global_conf: dict[str, Any], **local_conf: Any) -> Callable[[Any], None]:
    """PasteDeploy server factory: the address is checked now (pserve loads the
    server before the application), gunicorn serves once pserve has the application."""
    options = gunicorn_options(global_conf, local_conf)
    _probe(global_conf, options)

    def serve(app: Any) -> None:
        try:
            from gunicorn.app.pasterapp import serve as gunicorn_serve
        except ImportError:
            raise ConfigurationError(
                "use = egg:pyramid_sessup#gunicorn needs gunicorn: pip install 'pyramid_sessup[production]'"
            ) from None
        if "bind" not in options:
            host = str(options["host"])
            log.info("Serving on http://%s:%s", f"[{host}]" if ":" in host else host, options["port"])
        gunicorn_serve(app, global_conf, **options)

    return serve
