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

Needs the ``production`` extra (``pip install pyramid_sessup[production]``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from pyramid.exceptions import ConfigurationError

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
