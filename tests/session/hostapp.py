"""A tiny host application that uses pyramid_sessup through config.include,
with views that exercise every session operation."""
from __future__ import annotations

import threading
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request

#: Events the tests use to interleave concurrent requests deterministically.
GATES: dict[str, threading.Event] = {}
LOADED: dict[str, threading.Event] = {}


def _gate(name: str | None) -> None:
    if name:
        LOADED.setdefault(name, threading.Event()).set()
        if not GATES.setdefault(name, threading.Event()).wait(10):
            raise RuntimeError(f"gate {name} never opened")


def read(request: Request) -> dict[str, Any]:
    session = request.session
    data = dict(session.items())
    _gate(request.params.get("gate"))
    return {"data": data, "new": session.new}


def write(request: Request) -> dict[str, Any]:
    session = request.session
    len(session)  # load now, before waiting
    _gate(request.params.get("gate"))
    for key, value in request.params.items():
        if key != "gate":
            session[key] = value
    return {"data": dict(session.items())}


def incr(request: Request) -> dict[str, Any]:
    session = request.session
    session["n"] = session.get("n", 0) + 1
    return {"n": session["n"]}


def append(request: Request) -> dict[str, Any]:
    request.session.setdefault("items", []).append(request.params["item"])
    request.session["items"]  # nested mutation: no __setitem__ after append
    return {"items": request.session["items"]}


def clear(request: Request) -> dict[str, Any]:
    request.session.clear()
    return {}


def bad_value(request: Request) -> dict[str, Any]:
    try:
        request.session["when"] = {"nul": ["a\x00b"]} if "nul" in request.params else object()
    except TypeError as exc:
        return {"error": str(exc)}
    return {"error": None}


def op(request: Request) -> dict[str, Any]:
    session = request.session
    len(session)  # load now, before waiting
    _gate(request.params.get("gate"))
    name = request.matchdict["name"]
    if name == "reload":
        session["scratch"] = "unsaved"
    getattr(session, name)()
    return {"data": dict(session.items()), "new": session.new}


def plain(request: Request) -> dict[str, Any]:
    return {"plain": True}


def fail(request: Request) -> dict[str, Any]:
    """Reads the session, then answers 500 (a failed request saves nothing)."""
    len(request.session)
    request.response.status = 500
    return {}


def make_host_app(settings: dict[str, Any]) -> Any:
    config = Configurator(settings=settings)
    config.include("pyramid_sessup")
    config.include("pyramid_sessup.session_api")
    for name, view, path in [
        ("read", read, "/read"), ("write", write, "/write"), ("incr", incr, "/incr"),
        ("append", append, "/append"), ("clear", clear, "/clear"), ("bad", bad_value, "/bad"),
        ("op", op, "/op/{name}"), ("plain", plain, "/plain"), ("fail", fail, "/fail"),
    ]:
        config.add_route(name, path)
        # These test views change state on GET on purpose (to keep the tests short).
        config.add_view(view, route_name=name, renderer="json", require_csrf=False)
    return config.make_wsgi_app()
