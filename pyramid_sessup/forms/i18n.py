"""Languages of the pages: gettext catalogs, locale negotiation, deform's renderer.

The locale of a request is, in order: an explicit ``?_LOCALE_=`` in the query
string (which also sets the ``_LOCALE_`` cookie, so the visible language switch
sticks), that cookie, the best ``Accept-Language`` match, then
``pyramid.default_locale_name`` (when supported), then ``en``.

colander ships its Simplified Chinese catalog as ``zh_Hans`` while deform and
this package use ``zh_CN``; :func:`localizer_for` merges both so colander's own
messages ("Required", ...) follow the page language too.
"""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlencode

import deform
from pyramid.config import Configurator
from pyramid.i18n import Localizer, TranslationStringFactory, make_localizer
from pyramid.interfaces import ILocalizer, ITranslationDirectories
from pyramid.request import Request
from pyramid.threadlocal import get_current_request

DOMAIN = "pyramid_sessup"
_ = TranslationStringFactory(DOMAIN)


def plural(singular: str, plural: str) -> tuple[str, str]:
    """Mark a message with a plural form for extraction (``pot-create -k plural:1,2``);
    use it as ``localizer.pluralize(*message, n, domain=DOMAIN, mapping=...)``."""
    return singular, plural


SUPPORTED: tuple[str, ...] = ("en", "zh_CN")
DEFAULT = "en"
#: Query parameter and cookie naming the chosen locale (Pyramid's own name).
LOCALE_KEY = "_LOCALE_"
LOCALE_COOKIE_MAX_AGE = 365 * 24 * 3600

#: Catalog names to merge under one of our locales (least specific first).
_ALIASES: dict[str, tuple[str, ...]] = {"zh_CN": ("zh_Hans", "zh_CN")}

#: Display names for the language switch, each in its own language.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "zh_CN": "中文"}

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(_HERE, "templates")


def _from_accept_language(request: Request) -> str | None:
    header = request.accept_language
    parsed = getattr(header, "parsed", None) or ()
    # ``parsed`` is a list of (tag, q), header order; prefer higher q, keep order.
    ranked = sorted(enumerate(parsed), key=lambda item: (-item[1][1], item[0]))
    for _index, (tag, quality) in ranked:
        if quality <= 0:
            continue
        tag = tag.lower().replace("_", "-")
        if tag == "*":
            return DEFAULT
        if tag == "en" or tag.startswith("en-"):
            return "en"
        # Simplified Chinese; Traditional variants (zh-TW, zh-Hant) fall through.
        if tag in ("zh", "zh-cn", "zh-sg", "zh-hans") or tag.startswith(("zh-hans-", "zh-cn-")):
            return "zh_CN"
    return None


def _normalize(value: str | None) -> str | None:
    if not value:
        return None
    wanted = value.strip().replace("-", "_").lower()
    for locale in SUPPORTED:
        if locale.lower() == wanted:
            return locale
    if wanted in ("zh", "zh_hans"):
        return "zh_CN"
    return None


def negotiate_locale(request: Request) -> str:
    """Pyramid locale negotiator: query, cookie, ``Accept-Language``, then
    ``pyramid.default_locale_name`` if supported, else ``en``.

    Only ``request.GET`` is read: touching ``request.params`` on an upload
    POST would make WebOb parse (and copy) the whole body.
    """
    explicit = _normalize(request.GET.get(LOCALE_KEY))
    if explicit:
        def remember(request: Request, response: Any) -> None:
            response.set_cookie(LOCALE_KEY, explicit, max_age=LOCALE_COOKIE_MAX_AGE,
                                path="/", samesite="Lax", httponly=True)

        request.add_response_callback(remember)
        locale = explicit
    else:
        locale = (_normalize(request.cookies.get(LOCALE_KEY)) or _from_accept_language(request)
                  or _normalize(request.registry.settings.get("pyramid.default_locale_name")) or DEFAULT)
    ensure_localizer(request.registry, locale)
    return locale


def localizer_for(locale: str, directories: list[str]) -> Localizer:
    """A localizer for ``locale`` that also merges its catalog aliases."""
    names = _ALIASES.get(locale, (locale,))
    merged = make_localizer(names[0], directories)
    for name in names[1:]:
        extra = make_localizer(name, directories)
        # Later (more specific) catalogs win over earlier ones, domain by domain.
        for translations in extra.translations._domains.values():
            merged.translations.add(translations, merge=True)
    return Localizer(locale_name=locale, translations=merged.translations)


def ensure_localizer(registry: Any, locale: str) -> None:
    """Register the merged localizer before Pyramid builds a plain one."""
    if registry.queryUtility(ILocalizer, name=locale) is None:
        directories = registry.queryUtility(ITranslationDirectories, default=[])
        registry.registerUtility(localizer_for(locale, directories), ILocalizer, name=locale)


def translate(term: Any) -> Any:
    """deform's translator: the current request's localizer (threadlocal, as deform expects)."""
    request = get_current_request()
    if request is None:
        return term
    return request.localizer.translate(term)


def make_deform_renderer() -> deform.ZPTRendererFactory:
    """deform's template renderer: our widget templates first, then deform's."""
    search_path = (os.path.join(TEMPLATES, "deform"), os.path.join(os.path.dirname(deform.__file__), "templates"))
    return deform.ZPTRendererFactory(search_path, translator=translate)


def locale_switch(request: Request) -> list[dict[str, Any]]:
    """Links of the language switch: every supported locale, the current one marked."""
    current = request.locale_name
    links = []
    for locale in SUPPORTED:
        query = [(k, v) for k, v in request.GET.items() if k != LOCALE_KEY] + [(LOCALE_KEY, locale)]
        links.append({"locale": locale, "name": LANGUAGE_NAMES[locale], "current": locale == current,
                      "url": request.path + "?" + urlencode(query)})
    return links


def includeme(config: Configurator) -> None:
    """Translation directories, the negotiator and deform's renderer (once per app)."""
    if getattr(config.registry, "sessup_i18n", False):
        return
    config.registry.sessup_i18n = True
    config.include("pyramid_chameleon")
    config.add_translation_dirs("colander:locale/", "deform:locale/", "pyramid_sessup:locale/")
    config.set_locale_negotiator(negotiate_locale)
    config.registry.sessup_deform_renderer = make_deform_renderer()
    config.add_static_view("deform_static", "deform:static", cache_max_age=3600)
