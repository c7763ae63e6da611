"""The HTML pages people use: the home page, ``/ajax`` and the session page.

Every page shares ``templates/layout.pt``; :func:`page_values` gives it the
language switch, the navigation, the CSRF token (also in a ``<meta>`` tag for
scripts) and the flash messages.  A form sent with a dead CSRF token (the
session expired or was destroyed meanwhile) gets :func:`stale_form`: a page
that says what happened and offers to reload the form.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any, Callable

from pyramid.config import Configurator
from pyramid.interfaces import IRoutesMapper
from pyramid.renderers import render_to_response
from pyramid.request import Request
from pyramid.response import FileResponse, Response

from ..csrf import require_csrf
from ..errors import render_error, wants_json
from ..exceptions import CSRFRefused
from ..forms.i18n import _, locale_switch
from ..forms.messages import page_messages
from ..forms.schema import UploadLimits
from ..urls import SeeOther


@dataclass
class Page:
    """What ``layout.pt`` needs."""

    lang: str
    csrf_token: str
    static: Callable[[str], str]
    nav: list[dict[str, Any]]
    languages: list[dict[str, Any]]
    flash: list[str] = field(default_factory=list)
    #: ``has_route(name)``: whether this application has the route (uploads are optional).
    has_route: Callable[[str], bool] = lambda name: True


NAV = (
    ("home", _("Home")),
    ("sessup.upload_form", _("Upload form")),
    ("sessup.ajax", _("Ajax upload")),
    ("sessup.session_page", _("Session")),
    ("sessup.account_sessions", _("Your sessions")),
)


def page_values(request: Request, csrf: bool = True) -> Page:
    """Values of the shared layout for this request.

    ``csrf``: put a CSRF token in the page.  A token stores nothing but sets
    the visitor's CSRF cookie, so pages without a form (the home page) pass
    False: an anonymous visit then sets no cookie at all.
    """
    from . import static_spec

    spec = static_spec(request.registry.sessup_settings)
    current = request.matched_route.name if request.matched_route else None
    translate = request.localizer.translate
    return Page(
        lang=request.locale_name.replace("_", "-"),
        csrf_token=request.session.get_csrf_token() if csrf else "",
        static=lambda name: request.static_path(spec + name if spec.endswith(("/", ":")) else f"{spec}/{name}"),
        nav=[{"url": request.route_path(name), "title": translate(title), "current": name == current}
             for name, title in NAV if _has_route(request, name)],
        languages=locale_switch(request),
        flash=[translate(m) if not isinstance(m, str) else m for m in request.session.pop_flash()],
        has_route=lambda name: _has_route(request, name),
    )


def _has_route(request: Request, name: str) -> bool:
    mapper = request.registry.queryUtility(IRoutesMapper)
    return mapper is not None and mapper.get_route(name) is not None


def no_store(request: Request, response: Response | None = None) -> None:
    """Pages carry a CSRF token and session data: keep them out of shared caches."""
    response = request.response if response is None else response
    response.headers["Cache-Control"] = "no-store"
    response.vary = ("Cookie", "Accept-Language")


#: What a refused form says, by the refusal's code.
STALE_TITLES = {
    "csrf_origin": _("This request did not come from this site"),
}
STALE_TEXTS = {
    "csrf_origin": _("stale-origin", default="The browser sent this form from another site's page, so it was "
                                             "refused. Nothing was kept. Open the form on this site and send it "
                                             "again."),
}
STALE_TITLE = _("This form has expired")
STALE_TEXT = _("stale-token", default="After this form was shown, your session was renewed or destroyed, or "
                                      "the browser's cookies were cleared, so the form is no longer valid. "
                                      "Nothing you sent was kept. Reload the form and send it again.")


def stale_form(request: Request, exc: CSRFRefused, reload_url: str) -> Response:
    """A page for a browser whose form was refused by the CSRF check (403):
    what happened and a link that reloads the form.  Scripts (``Accept:
    application/json``) get the add-on's usual error answer."""
    if wants_json(request):
        return render_error(request, exc)
    translate = request.localizer.translate
    response = render_to_response("pyramid_sessup.demo:templates/stale.pt", {
        "page": page_values(request),
        "title": translate(STALE_TITLES.get(exc.code, STALE_TITLE)),
        "text": translate(STALE_TEXTS.get(exc.code, STALE_TEXT)),
        "reload_url": reload_url,
    }, request=request)
    response.status_int = exc.status_code
    no_store(request, response)
    return response


#: The icon browsers ask for at /favicon.ico (the package's static/favicon.ico).
FAVICON = str(files("pyramid_sessup") / "static" / "favicon.ico")


def favicon(request: Request) -> Response:
    return FileResponse(FAVICON, request=request, content_type="image/x-icon", cache_max_age=86400)


def home(request: Request) -> dict[str, Any]:
    no_store(request)
    return {"page": page_values(request, csrf=False)}


#: Strings the /ajax script shows, translated on the server.
AJAX_MESSAGES = {
    "uploading": _("Uploading ${name}…"),
    "done": _("All files uploaded."),
    "cancelled": _("Upload cancelled; nothing was kept."),
    "failed": _("Upload of ${name} failed: ${error}"),
    "nothing": _("Choose at least one file."),
    "network": _("The connection failed."),
    "files": _("${count} files"),
    "not_stored": _("Not stored"),
    "resuming": _("Resuming ${name} at ${percent}…"),
    "retrying": _("The connection failed; retrying (attempt ${attempt})…"),
    "cancelled_resumable": _("Upload cancelled; the unfinished upload was removed from the server."),
    "resume_hint": _("Choose the same file again to continue where it stopped."),
}

#: Bytes per PATCH of the /ajax page's resumable mode (at most sessup.upload.tus_max_chunk_size).
TUS_CHUNK = 5 * 1024 * 1024


def ajax(request: Request) -> dict[str, Any]:
    no_store(request)
    translate = request.localizer.translate
    values = request.registry.sessup_settings
    messages: dict[str, Any] = {key: translate(message) for key, message in AJAX_MESSAGES.items()}
    messages.update(page_messages(request.localizer))
    max_chunk = values.upload.tus_max_chunk_size
    return {
        "page": page_values(request),
        "upload_url": request.route_path("sessup.upload"),
        "field": values.upload.field,
        # The resumable mode (tus), when this application has the /files/ endpoint.
        "tus_url": request.route_path("sessup.tus", slash="/") if _has_route(request, "sessup.tus") else "",
        "tus_chunk": min(TUS_CHUNK, max_chunk) if max_chunk else TUS_CHUNK,
        "messages_json": _script_json(messages),
        # The page checks size, type and count before sending; the server still judges.
        "limits_json": _script_json(UploadLimits.from_values(values).published()),
        "csrf_url": request.route_path("sessup.csrf") if _has_route(request, "sessup.csrf") else "",
    }


def _script_json(value: Any) -> str:
    """JSON for a ``<script type="application/json">`` block, inserted as is:
    with every ``<`` escaped, nothing in it can end the block or open a comment."""
    return json.dumps(value, ensure_ascii=False).replace("<", "\\u003c")


def _when(timestamp: float, request: Request) -> tuple[str, str]:
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return moment.isoformat(timespec="seconds"), moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def session_page(request: Request) -> dict[str, Any]:
    """Show the session.  Only reads it, so an anonymous visit stores nothing;
    the "Count a view" button (:func:`session_page_count`) writes."""
    no_store(request)
    session = request.session
    views = session.get("views", 0)
    timeout = request.registry.sessup_settings.session.timeout
    created = getattr(session, "created", None) or time.time()
    created_iso, created_text = _when(created, request)
    expires_iso, expires_text = _when(time.time() + timeout, request)
    return {
        "page": page_values(request),
        "views": views,
        "created_iso": created_iso,
        "created_text": created_text,
        "expires_iso": expires_iso,
        "expires_text": expires_text,
        "timeout_minutes": max(1, round(timeout / 60)),
    }


def session_page_count(request: Request) -> Response:
    """Count a view (CSRF-checked POST; the first one stores the session), then back to the page."""
    back = request.route_path("sessup.session_page")
    try:
        require_csrf(request)
    except CSRFRefused as exc:
        return stale_form(request, exc, back)
    session = request.session
    session["views"] = session.get("views", 0) + 1
    return SeeOther(location=back)


def session_page_regenerate(request: Request) -> Response:
    """New session ID, same data (CSRF-checked POST), then back to the page."""
    back = request.route_path("sessup.session_page")
    try:
        require_csrf(request)
    except CSRFRefused as exc:
        return stale_form(request, exc, back)
    request.session.regenerate()
    request.session.flash(request.localizer.translate(_("The session has a new ID; its data was kept.")))
    return SeeOther(location=back)


def session_page_destroy(request: Request) -> Response:
    """Destroy the session (CSRF-checked POST); the next page starts a new one."""
    back = request.route_path("sessup.session_page")
    try:
        require_csrf(request)
    except CSRFRefused as exc:
        return stale_form(request, exc, back)
    request.session.invalidate()
    # Said in the new session: the old one (and its data) is gone.
    request.session.flash(request.localizer.translate(_("The session was destroyed; this is a new one.")))
    return SeeOther(location=back)


def includeme(config: Configurator) -> None:
    config.include("..forms.i18n")
    config.add_route("sessup.favicon", "/favicon.ico")
    config.add_view(favicon, route_name="sessup.favicon", request_method=("GET", "HEAD"))
    config.add_route("home", "/")
    config.add_view(home, route_name="home", request_method="GET",
                    renderer="pyramid_sessup.demo:templates/home.pt")
    config.add_route("sessup.session_page", "/session/page")
    config.add_route("sessup.session_page_count", "/session/page/count")
    config.add_route("sessup.session_page_regenerate", "/session/page/regenerate")
    config.add_route("sessup.session_page_destroy", "/session/page/destroy")
    if config.registry.sessup_settings.upload.enabled:
        config.add_route("sessup.ajax", "/ajax")
        config.add_view(ajax, route_name="sessup.ajax", request_method="GET",
                        renderer="pyramid_sessup.demo:templates/ajax.pt")
    config.add_view(session_page, route_name="sessup.session_page", request_method="GET",
                    renderer="pyramid_sessup.demo:templates/session.pt")
    config.add_view(session_page_count, route_name="sessup.session_page_count", request_method="POST")
    config.add_view(session_page_regenerate, route_name="sessup.session_page_regenerate", request_method="POST")
    config.add_view(session_page_destroy, route_name="sessup.session_page_destroy", request_method="POST")
