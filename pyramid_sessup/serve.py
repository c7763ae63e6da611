"""``use = egg:pyramid_sessup#waitress``: waitress for ``pserve``, with its
address taken before the application is built.

The INI files' ``[server:main]`` use it instead of ``egg:waitress#main`` for
two reasons a new user meets in the first minutes:

* a port already in use stops ``pserve`` with one line saying so (and how to
  pick another port), exit status 1, instead of a 30-line traceback, and the
  application is not even built (no start-up sweep, no store connection);
* the address served is logged on the ``pyramid_sessup.serve`` logger at
  INFO, which production.ini shows (waitress's own "Serving on" is INFO on the
  ``waitress`` logger, whose other INFO lines are per request).

pserve's ``http_port`` variable (``pserve development.ini http_port=6600``)
overrides ``port`` (not ``listen``), as for ``egg:pyramid_sessup#gunicorn`` (serving.py).
Every other option is waitress's own (``host``, ``port``, ``listen``,
``threads``, ``max_request_body_size``...), passed through unchanged.
"""
from __future__ import annotations

import errno
import logging
import os
from typing import Any, Callable

log = logging.getLogger(__name__)

#: Why binding failed, for the one line (other errors keep their traceback).
_BIND_ERRORS = {
    errno.EADDRINUSE: "the address is already in use (another server is running there?)",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}


class _Application:
    """Stands in for the application until pserve has built it (waitress
    needs one to bind): one attribute look-up per request."""

    app: Callable[..., Any] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        assert self.app is not None, "pserve serves only after the application is built"
        return self.app(environ, start_response)


def _where(settings: dict[str, Any]) -> str:
    if settings.get("listen"):
        return str(settings["listen"])
    return f"{settings.get('host', '0.0.0.0')}:{settings.get('port', 8080)}"


def _addresses(server: Any) -> list[str]:
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return [f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}" for host, port in listen]


def cannot_listen(exc: OSError, where: str, port: str, global_conf: dict[str, Any]) -> SystemExit:
    """The one line for a bind that failed for a reason a user can act on
    (raise it); re-raises anything else with its traceback."""
    reason = _BIND_ERRORS.get(exc.errno or 0)
    if reason is None:
        raise exc
    ini = os.path.basename(global_conf.get("__file__") or "development.ini")
    other = int(port) + 1 if port.isdigit() and int(port) < 65535 else 6600
    # SystemExit with a message: Python prints it alone and exits with status 1.
    return SystemExit(f"pserve: cannot listen on {where}: {reason}. "
                      f"Stop the other server or choose another port: pserve {ini} http_port={other}")


def waitress_factory(global_conf: dict[str, Any], **settings: Any) -> Callable[[Any], None]:
    """``paste.server_factory``: bind now (pserve loads the server before the
    application), serve once pserve hands over the application."""
    from waitress.server import create_server

    if global_conf.get("http_port") and not settings.get("listen"):
        # (an INI with listen places %(http_port)s there itself, if it wants it)
        settings["port"] = str(global_conf["http_port"])
    slot = _Application()
    try:
        server = create_server(slot, **settings)
    except OSError as exc:
        raise cannot_listen(exc, _where(settings), str(settings.get("port", "")), global_conf) from None

    def serve(app: Any) -> None:
        slot.app = app
        for address in _addresses(server):
            log.info("Serving on %s", address)
        server.run()  # as waitress.serve: returns on Ctrl-C after stopping its threads

    return serve
