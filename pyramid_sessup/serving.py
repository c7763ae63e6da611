"""``use = egg:pyramid_sessup#gunicorn``: gunicorn started by ``pserve`` from an INI.

gunicorn ships its own PasteDeploy runner (``egg:gunicorn#main``); this one
does what it does, hands it every key unchanged, and adds the two things an
INI cannot say:

``port``
    The port to listen on (with ``host``).  pserve's ``http_port`` variable
    (``pserve production.ini http_port=8080``) overrides it, so one INI serves
    several processes on several ports.  PasteDeploy gives the INI's
    ``[DEFAULT]`` precedence over pserve's variables, so ``%(http_port)s``
    alone could not have a default.

``workers = auto``
    One worker process per core this process may run on.

and a lingering close (:func:`post_request`), the way nginx closes its own
clients' connections.  An upload refused before its body is read (CSRF,
size) is answered while the client is still sending; closing the connection
then, with the body unread, makes Linux reset it, and the reset can destroy
the answer before the peer has read it (nginx then reports 502 for a 403).
So after answering a request whose body it left unread, the server
half-closes the connection, reads and discards what the peer still sends
until the peer closes, :data:`LINGER_SECONDS` and :data:`LINGER_BYTES` at
most, and only then closes.  It runs after whatever ``post_request`` hook the
configuration names.

As ``egg:pyramid_sessup#waitress`` (serve.py), it takes the address before
the application is built: a taken port stops ``pserve`` with one line, and
the address served is logged on the ``pyramid_sessup.serving`` logger at INFO.

Needs the ``production`` extra (``pip install pyramid_sessup[production]``).
"""
from __future__ import annotations

import logging
import os
import select
import socket
import time
from typing import Any, Callable, Mapping

from pyramid.exceptions import ConfigurationError

log = logging.getLogger(__name__)

DEFAULT_PORT = "6543"

#: Seconds at most a connection lingers after answering a request whose body it
#: left unread, before it closes: what a slow or stalled peer can hold a thread.
#: nginx closes within milliseconds of reading the answer.
LINGER_SECONDS = 2.0
#: Seconds between two reads while the peer has not closed.  nginx forwarding a
#: body reads the answer only once the connection stops taking more: read as
#: the bytes come, it would go on forwarding as fast as its client sends.
LINGER_PAUSE = 0.1
#: Bytes at most read and discarded meanwhile.  A peer forwarding a body has in
#: flight what the socket buffers hold between its client and this server (up
#: to 6.3 MiB measured on loopback) when it reads the answer and stops.
LINGER_BYTES = 32 * 1024 * 1024
#: An unread rest of the body at most this long (bytes) needs no lingering:
#: gunicorn reads and discards that much itself before reusing or closing the
#: connection (``_DRAIN_MAX_BYTES`` and ``close_graceful``'s default).
GUNICORN_DRAINS = 64 * 1024
#: Read size of the discarding loop (bytes).
_DISCARD_BLOCK = 64 * 1024


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


def body_left_unread(req: Any) -> bool:
    """Whether more of ``req``'s body than gunicorn drains by itself
    (:data:`GUNICORN_DRAINS`) is still unread: an HTTP/1 request of gunicorn
    whose ``Content-Length`` body was not read to its end, or whose chunked
    body was not read to its last chunk."""
    reader = getattr(getattr(req, "body", None), "reader", None)
    length = getattr(reader, "length", None)  # LengthReader: the bytes not yet read
    if isinstance(length, int):
        return length > GUNICORN_DRAINS
    # ChunkedReader: its parser is dropped once the last chunk is read. Its rest is unknown.
    return getattr(reader, "parser", None) is not None


def lingering_close(sock: socket.socket, seconds: float = LINGER_SECONDS, limit: int = LINGER_BYTES,
                    pause: float = LINGER_PAUSE) -> int:
    """Half-close ``sock`` (the answer is sent: the peer reads it, then the end
    of the stream), read and discard what the peer still sends until it closes,
    ``seconds`` or ``limit`` bytes at most, then shut the reading side too, so
    that nothing read on this socket afterwards waits.  Returns the bytes discarded.

    Closing a socket whose receive queue holds data makes Linux send a reset,
    and a peer that gets it while still sending loses the answer it had not
    read yet; once the peer has closed, or the bounds are reached, it may.

    Until the peer closes, what it sends is read every ``pause`` seconds, not
    as it comes: nginx forwarding a body reads the answer only when the
    connection stops taking more, and a connection always read at once never does."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the peer is gone already
        return 0
    prior = sock.gettimeout()
    deadline = time.monotonic() + seconds
    block = bytearray(_DISCARD_BLOCK)
    discarded = 0
    poller = select.poll()
    # The peer's end of stream (or a reset), even behind data not read yet (POLLRDHUP: Linux).
    poller.register(sock, getattr(select, "POLLRDHUP", 0))
    sock.settimeout(0.0)
    try:
        while discarded < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Wakes at once when the peer has closed: everything it sent is then queued.
            poller.poll(min(pause, remaining) * 1000)
            try:
                while discarded < limit:  # what is queued
                    received = sock.recv_into(block, min(len(block), limit - discarded))
                    if not received:  # the peer's end of stream: nothing is left to reset
                        return discarded
                    discarded += received
            except BlockingIOError:  # nothing more queued for now
                pass
    except OSError:  # the peer reset the connection
        pass
    finally:
        try:
            # Linux: reads then return what is queued, then end-of-stream, without waiting;
            # gunicorn's own drains that follow cannot hold the thread past the bounds.
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
        sock.settimeout(prior)
    return discarded


def post_request(worker: Any, req: Any, environ: dict[str, Any], resp: Any) -> None:
    """gunicorn's ``post_request`` hook: a lingering close (:func:`lingering_close`)
    after an answer sent with the request body left unread (:func:`body_left_unread`).

    It runs in the worker thread once the answer is written, before gunicorn
    decides between keep-alive and closing; a half-closed connection is never
    reused (gunicorn then finds the end of the stream and closes it).  Every
    other request costs a few attribute lookups."""
    if not body_left_unread(req):
        return
    sock = environ.get("gunicorn.socket")
    # Plain HTTP/1 over TCP only: a TLS socket cannot be half-closed without
    # dropping TLS (nginx terminates TLS in front), and an HTTP/2 socket carries other streams.
    if (type(sock) is not socket.socket or getattr(req, "version", (2, 0)) >= (2, 0)
            or resp is None or not resp.headers_sent or getattr(resp, "upgrade", False)):
        return
    lingering_close(sock)


def _after(hook: Callable[..., None]) -> Callable[[Any, Any, dict[str, Any], Any], None]:
    """``hook`` (the configuration's own ``post_request``), then :func:`post_request`."""
    def both(worker: Any, req: Any, environ: dict[str, Any], resp: Any) -> None:
        try:
            hook(worker, req, environ, resp)
        finally:
            post_request(worker, req, environ, resp)
    return both


try:
    from gunicorn.glogging import Logger as _GunicornLogger
except ImportError:  # gunicorn is the [production] extra
    _GunicornLogger = object  # type: ignore[assignment, misc]


class AccessLogger(_GunicornLogger):  # type: ignore[misc, valid-type]
    """gunicorn's logger, building access-log lines only if ``gunicorn.access`` writes them.

    With a logging configuration (the INI's ``[loggers]``), gunicorn builds every
    request's access-log fields and hands them to a logger without handlers
    (it does not propagate): a tenth of a worker's CPU on a session GET, for
    nothing.  ``accesslog = -`` or a ``[logger_gunicorn.access]`` section with a
    handler in the INI turns access lines on.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)  # applies the logging configuration last
        access = self.access_log
        enabled = bool(getattr(self, "_access_log_enabled", True))
        self._access_log_enabled = enabled and access.isEnabledFor(logging.INFO) and access.hasHandlers()


def application(app: Any, global_conf: Mapping[str, Any], **local_conf: Any) -> Any:
    """The gunicorn application ``egg:pyramid_sessup#gunicorn`` runs: gunicorn's
    own PasteDeploy runner (``gunicorn.app.pasterapp.serve``) with
    :func:`gunicorn_options`, and :func:`post_request` added after every
    other setting is loaded (the INI's, a gunicorn config file's)."""
    try:
        from gunicorn.app.pasterapp import has_logging_config
        from gunicorn.app.wsgiapp import WSGIApplication
        from gunicorn.config import PostRequest, get_default_config_file
    except ImportError:
        raise ConfigurationError(
            "use = egg:pyramid_sessup#gunicorn needs gunicorn: pip install 'pyramid_sessup[production]'"
        ) from None
    options = gunicorn_options(global_conf, local_conf)
    config_file = global_conf["__file__"]
    gunicorn_config_file = options.pop("config", None)
    host, port = options.pop("host", ""), options.pop("port", "")
    if host and port:
        options["bind"] = f"{host}:{port}"

    class Server(WSGIApplication):
        def load_config(self) -> None:
            cfg = self.cfg
            cfg.set("default_proc_name", config_file)
            if has_logging_config(config_file):
                cfg.set("logconfig", config_file)
            config = gunicorn_config_file or get_default_config_file()
            if config is not None:
                self.load_config_from_file(config)
            for key, value in options.items():
                if value is not None:
                    cfg.set(key.lower(), value)
            if cfg.settings["logger_class"].value == "gunicorn.glogging.Logger":
                cfg.set("logger_class", "pyramid_sessup.serving.AccessLogger")
            theirs = cfg.post_request
            cfg.set("post_request", post_request if theirs is PostRequest.default else _after(theirs))

        def load(self) -> Any:
            return app

    return Server()


def gunicorn(app: Any, global_conf: dict[str, Any], **local_conf: Any) -> None:
    """PasteDeploy server runner: serve ``app`` with gunicorn (see the module docstring)."""
    application(app, global_conf, **local_conf).run()


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
        server = application(app, global_conf, **local_conf)
        if "bind" not in options:
            host = str(options["host"])
            log.info("Serving on http://%s:%s", f"[{host}]" if ":" in host else host, options["port"])
        server.run()

    return serve
