"""The account pages: sign in by name, see and end one's sessions.

They show the add-on's per-user sessions (:mod:`pyramid_sessup.users`), not
passwords: anyone may sign in under any name, and the page says so.

* ``GET/POST /account/sign-in``: a name (trimmed, bounded, printable), then
  ``request.session.sign_in(name)``: new session ID, new CSRF token;
* ``GET /account/sessions``: this user's sessions, most recently seen first,
  each by device and times, never by session ID (the add-on gives handles);
* ``POST /account/sessions/revoke``, ``/account/sign-out-everywhere`` (every
  other session) and ``/account/sign-out``.

Every POST checks the add-on's CSRF token, as the other demo pages do, and
answers with a redirect (303); a refused token gets the "form expired" page.
"""
from __future__ import annotations

import time
import unicodedata
from datetime import UTC, datetime
from typing import Any

from pyramid.config import Configurator
from pyramid.i18n import TranslationString
from pyramid.renderers import render_to_response
from pyramid.request import Request
from pyramid.response import Response

from ..csrf import require_csrf
from ..exceptions import CSRFRefused
from ..forms.i18n import DOMAIN, _, plural
from ..urls import SeeOther
from ..users import SessionInfo, list_sessions, revoke_all_sessions, revoke_session
from . import devices
from .pages import no_store, page_values, stale_form

SIGN_IN = "sessup.account_sign_in"
SESSIONS = "sessup.account_sessions"
REVOKE = "sessup.account_revoke"
SIGN_OUT_EVERYWHERE = "sessup.account_sign_out_everywhere"
SIGN_OUT = "sessup.account_sign_out"

SIGN_IN_TEMPLATE = "pyramid_sessup.demo:templates/sign_in.pt"

#: Longest name, in characters after trimming.
MAX_USER = 64
#: Longest handle accepted from the form (the add-on's are far shorter).
MAX_HANDLE = 256

USER_MISSING = _("Enter a name to sign in with.")
USER_TOO_LONG = _("The name is too long: at most ${max} characters.")
USER_UNPRINTABLE = _("The name contains invisible or control characters.")

SIGNED_IN = _("Signed in as ${user}.")
REVOKED = _("That session was signed out.")
NOT_REVOKED = _("That session had already ended.")
SIGNED_OUT = _("You are signed out.")
SIGNED_OUT_OTHERS = plural("Signed out ${count} other session.", "Signed out ${count} other sessions.")

JUST_NOW = _("just now")
MINUTES_AGO = plural("${count} minute ago", "${count} minutes ago")
HOURS_AGO = plural("${count} hour ago", "${count} hours ago")
DAYS_AGO = plural("${count} day ago", "${count} days ago")

UNKNOWN_DEVICE = _("Unknown device")
BROWSER_ON_SYSTEM = _("${browser} on ${system}")


def clean_user(value: str | None) -> tuple[str, TranslationString | None]:
    """The name to sign in with, and what is wrong with it (``None``: nothing).

    Inner runs of whitespace become one space; the result must be non-empty,
    at most :data:`MAX_USER` characters and printable (no control, format or
    bidi characters that would make two names look alike).
    """
    raw = value or ""
    if len(raw) > 8 * MAX_USER:  # no need to normalize a megabyte to refuse it
        return raw[:MAX_USER], USER_TOO_LONG
    user = " ".join(unicodedata.normalize("NFC", raw).split())
    if not user:
        return user, USER_MISSING
    if len(user) > MAX_USER:
        return user, USER_TOO_LONG
    if not user.isprintable():
        return user, USER_UNPRINTABLE
    return user, None


def _sign_in_page(request: Request, user: str = "", error: TranslationString | None = None,
                  status: int = 200) -> Response:
    translate = request.localizer.translate
    response = render_to_response(SIGN_IN_TEMPLATE, {
        "page": page_values(request),
        "user": user,
        "error": translate(error, mapping={"max": MAX_USER}) if error is not None else "",
        "signed_in_as": request.session.user_id,
        "max_user": MAX_USER,
    }, request=request)
    response.status_int = status
    no_store(request, response)
    return response


def form_field(request: Request, name: str) -> str | None:
    """A field of the page's urlencoded form, or None.  Any other body (a
    multipart one with a broken boundary, a negative Content-Length) is not
    this page's form: it is never handed to WebOb's parser, which raises."""
    if request.content_type != "application/x-www-form-urlencoded" or (request.content_length or 0) < 0:
        return None
    value = request.POST.get(name)
    return value if isinstance(value, str) else None


def sign_in_form(request: Request) -> Response:
    return _sign_in_page(request)


def sign_in(request: Request) -> Response:
    """Check the name; bind the session to it (new ID and CSRF token), then the sessions page."""
    try:
        require_csrf(request)
    except CSRFRefused as exc:
        return stale_form(request, exc, request.route_path(SIGN_IN))
    user, error = clean_user(form_field(request, "user"))
    if error is not None:
        return _sign_in_page(request, user, error, status=400)
    request.session.sign_in(user)
    request.session.flash(request.localizer.translate(SIGNED_IN, mapping={"user": user}))
    return SeeOther(location=request.route_path(SESSIONS))


def relative_time(timestamp: float, now: float, request: Request) -> str:
    """"just now", "5 minutes ago", ...: readable in any time zone."""
    age = max(0, int(now - timestamp))  # a clock a little ahead is "just now" too
    for message, unit in ((DAYS_AGO, 86400), (HOURS_AGO, 3600), (MINUTES_AGO, 60)):
        if age >= unit:
            count = age // unit
            return request.localizer.pluralize(*message, count, domain=DOMAIN, mapping={"count": count})
    return request.localizer.translate(JUST_NOW)


def device_name(user_agent: str | None, request: Request) -> str:
    device = devices.describe(user_agent)
    if device.browser and device.system:
        return request.localizer.translate(BROWSER_ON_SYSTEM,
                                           mapping={"browser": device.browser, "system": device.system})
    return device.browser or device.system or request.localizer.translate(UNKNOWN_DEVICE)


def _moment(timestamp: float, now: float, request: Request) -> dict[str, str]:
    """A time for a ``<time>`` element: machine-readable, relative, and exact (UTC) on hover."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return {"iso": moment.isoformat(timespec="seconds"), "text": relative_time(timestamp, now, request),
            "exact": moment.strftime("%Y-%m-%d %H:%M:%S UTC")}


def session_row(info: SessionInfo, now: float, request: Request) -> dict[str, Any]:
    """What the table shows of one session: no ID, no address (a handle to revoke it)."""
    return {"handle": info.handle, "current": info.current, "device": device_name(info.user_agent, request),
            "created": _moment(info.created, now, request), "last_seen": _moment(info.last_seen, now, request)}


def sessions_page(request: Request) -> Any:
    """This user's sessions; a visitor who is not signed in is sent to sign in."""
    user = request.session.user_id
    if user is None:
        return SeeOther(location=request.route_path(SIGN_IN))
    no_store(request)
    now = time.time()
    rows = [session_row(info, now, request) for info in list_sessions(request)]
    return {"page": page_values(request), "user": user, "sessions": rows}


def _checked(request: Request) -> Response | None:
    """The answer to a POST of the sessions page that must not go on: a refused
    CSRF token, or a visitor no longer signed in (the session ended meanwhile)."""
    try:
        require_csrf(request)
    except CSRFRefused as exc:
        return stale_form(request, exc, request.route_path(SESSIONS))
    if request.session.user_id is None:
        return SeeOther(location=request.route_path(SIGN_IN))
    return None


def revoke(request: Request) -> Response:
    """Sign one of this user's other sessions out, by the handle the table gave."""
    refused = _checked(request)
    if refused is not None:
        return refused
    handle = form_field(request, "handle") or ""
    done = 0 < len(handle) <= MAX_HANDLE and revoke_session(request, handle)
    if request.session.user_id is None:
        # The handle named this very session (taken from another browser's
        # list): revoking it signed this one out.
        request.session.flash(request.localizer.translate(SIGNED_OUT))
        return SeeOther(location=request.route_path(SIGN_IN))
    request.session.flash(request.localizer.translate(REVOKED if done else NOT_REVOKED))
    return SeeOther(location=request.route_path(SESSIONS))


def sign_out_everywhere(request: Request) -> Response:
    """Sign out every other session of this user; this one stays signed in."""
    refused = _checked(request)
    if refused is not None:
        return refused
    count = revoke_all_sessions(request, keep_current=True)
    request.session.flash(request.localizer.pluralize(*SIGNED_OUT_OTHERS, count, domain=DOMAIN,
                                                      mapping={"count": count}))
    return SeeOther(location=request.route_path(SESSIONS))


def sign_out(request: Request) -> Response:
    """Sign this session out (it is invalidated), then the sign-in page."""
    try:
        require_csrf(request)
    except CSRFRefused as exc:
        return stale_form(request, exc, request.route_path(SESSIONS))
    if request.session.user_id is not None:
        request.session.sign_out()
        # Said in the new, anonymous session.
        request.session.flash(request.localizer.translate(SIGNED_OUT))
    return SeeOther(location=request.route_path(SIGN_IN))


def includeme(config: Configurator) -> None:
    config.include("..forms.i18n")
    config.add_route(SIGN_IN, "/account/sign-in")
    config.add_route(SESSIONS, "/account/sessions")
    config.add_route(REVOKE, "/account/sessions/revoke")
    config.add_route(SIGN_OUT_EVERYWHERE, "/account/sign-out-everywhere")
    config.add_route(SIGN_OUT, "/account/sign-out")
    config.add_view(sign_in_form, route_name=SIGN_IN, request_method="GET")
    config.add_view(sign_in, route_name=SIGN_IN, request_method="POST")
    config.add_view(sessions_page, route_name=SESSIONS, request_method="GET",
                    renderer="pyramid_sessup.demo:templates/sessions.pt")
    config.add_view(revoke, route_name=REVOKE, request_method="POST")
    config.add_view(sign_out_everywhere, route_name=SIGN_OUT_EVERYWHERE, request_method="POST")
    config.add_view(sign_out, route_name=SIGN_OUT, request_method="POST")
