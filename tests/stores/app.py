"""The demo application (exactly :func:`pyramid_sessup.demo.main`'s configuration)
plus GET endpoints that make request overlap deliberate (the lost-write
tests), logout/login endpoints for the resurrection races, and sign-in / list
/ revoke endpoints over :mod:`pyramid_sessup.users`; served by pserve with
``use = call:tests.stores.app:main``."""
from __future__ import annotations

import hashlib
import time
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.router import Router

import pyramid_sessup.demo
from pyramid_sessup.users import list_sessions, revoke_all_sessions, revoke_session


def _digest(sid: str) -> str:
    """Names a session ID in an answer without showing it."""
    return hashlib.sha256(sid.encode("ascii")).hexdigest()[:16]


def set_key(request: Request) -> dict[str, Any]:
    """Write one key after an optional pause: two of these overlap on purpose."""
    session = request.session
    session.get("touch-the-session-first")
    loaded_as = session.id  # the ID the session had when this request loaded it
    time.sleep(float(request.params.get("delay", "0")))
    session[request.matchdict["key"]] = request.params.get("value", "1")
    if "digest" in request.params:
        return {"data": dict(session.items()), "loaded_as": _digest(loaded_as)}
    return dict(session.items())


def increment(request: Request) -> dict[str, Any]:
    """Read-modify-write of one counter, with a pause in the middle."""
    session = request.session
    count = session.get("count", 0)
    time.sleep(float(request.params.get("delay", "0")))
    session["count"] = count + 1
    return {"count": session["count"]}


def destroy(request: Request) -> dict[str, Any]:
    request.session.invalidate()
    return {"destroyed": True}


def regenerate(request: Request) -> dict[str, Any]:
    request.session.regenerate()
    return {"regenerated": True}


def info(request: Request) -> dict[str, Any]:
    """What the session holds, without writing to it."""
    session = request.session
    return {"new": session.new, "count": session.get("count", 0)}


def sign_in(request: Request) -> dict[str, Any]:
    request.session.sign_in(request.params["user"])
    return {"user": request.session.user_id}


def sign_out(request: Request) -> dict[str, Any]:
    request.session.sign_out()
    return {"user": request.session.user_id}


def who(request: Request) -> dict[str, Any]:
    """Who the session is signed in as, and whether it is new; writes nothing itself."""
    session = request.session
    return {"user": session.user_id, "new": session.new, "data": dict(session.items())}


def sessions(request: Request) -> dict[str, Any]:
    found = list_sessions(request, request.params.get("user"))
    return {"sessions": [info.__dict__ for info in found]}


def revoke(request: Request) -> dict[str, Any]:
    return {"revoked": revoke_session(request, request.params["handle"], request.params.get("user"))}


def revoke_all(request: Request) -> dict[str, Any]:
    keep = request.params.get("keep", "true") == "true"
    return {"revoked": revoke_all_sessions(request, request.params.get("user"), keep_current=keep)}
def make_due(request: Request) -> dict[str, Any]:
    """Age a session's ID past any rotate_after, in the store itself (this request
    never loads the session, so it does not rotate it)."""
    record = {"_issued": time.time() - 10 * 365 * 86400}
    return {"aged": request.registry.sessup_store.update(request.params["sid"], record, []) is not None}


def lookup(request: Request) -> dict[str, Any]:
    """What the store answers for an ID: live, forwarded (to which ID) or dead."""
    found = request.registry.sessup_store.lookup(request.params["sid"], touch=False)
    if isinstance(found, dict):
        return {"live": True, "forward": None}
    return {"live": False, "forward": getattr(found, "target", None)}


def main(global_config: dict[str, Any] | None, **settings: Any) -> Router:
    app = pyramid_sessup.demo.main(global_config, **settings)
    with Configurator(registry=app.registry) as config:
        config.add_route("test.set", "/test/set/{key}")
        config.add_route("test.incr", "/test/incr")
        config.add_view(set_key, route_name="test.set", renderer="json")
        config.add_view(increment, route_name="test.incr", renderer="json")
        # Logout and login without the CSRF dance: the races under test are about the store.
        config.add_route("test.destroy", "/test/destroy")
        config.add_route("test.regenerate", "/test/regenerate")
        config.add_route("test.info", "/test/info")
        config.add_view(destroy, route_name="test.destroy", request_method="POST", renderer="json",
                        require_csrf=False)
        config.add_view(regenerate, route_name="test.regenerate", request_method="POST", renderer="json",
                        require_csrf=False)
        config.add_view(info, route_name="test.info", renderer="json")
        # Sessions per user (pyramid_sessup.users); the same shortcut on CSRF.
        for name, view in (("sign-in", sign_in), ("sign-out", sign_out), ("revoke", revoke),
                           ("revoke-all", revoke_all)):
            config.add_route(f"test.{name}", f"/test/{name}")
            config.add_view(view, route_name=f"test.{name}", request_method="POST", renderer="json",
                            require_csrf=False)
        for name, view in (("who", who), ("sessions", sessions)):
            config.add_route(f"test.{name}", f"/test/{name}")
            config.add_view(view, route_name=f"test.{name}", renderer="json")
        config.add_route("test.due", "/test/due")
        config.add_route("test.lookup", "/test/lookup")
        config.add_view(make_due, route_name="test.due", renderer="json")
        config.add_view(lookup, route_name="test.lookup", renderer="json")
    return config.make_wsgi_app()
