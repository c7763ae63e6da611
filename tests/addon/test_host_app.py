"""The add-on inside someone else's app: every route group under ``/api`` beside
the host's own ``/session``, ``/files/`` and CSRF-free ``POST /reset``; URLs under
the prefix and never from ``Host``; the host's CSRF policy left alone."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.csrf import CookieCSRFStoragePolicy
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import ISession, ITweens
from pyramid.request import Request
from zope.interface.verify import verifyObject

from pyramid_sessup import SessupSessionFactory
from pyramid_sessup.testing import csrf_token, settings_for_tests, upload

from ..support import ROOT

TUS = {"Tus-Resumable": "1.0.0"}
EVIL = "evil.example"


def host_view(name: str) -> Any:
    def view(request: Request) -> dict[str, str]:
        return {"host": name}

    return view


def make_host(settings: dict[str, Any], prefix: str = "/api", host_csrf: bool = False) -> Any:
    config = Configurator(settings=settings)
    if host_csrf:
        # A host with its own CSRF policy and default: the add-on's views must not care.
        config.set_csrf_storage_policy(CookieCSRFStoragePolicy())
        config.set_default_csrf_options(require_csrf=True)
    config.include("pyramid_sessup")
    config.include("pyramid_sessup.session_api", route_prefix=prefix)
    config.include("pyramid_sessup.uploads", route_prefix=prefix)
    config.include("pyramid_sessup.tus", route_prefix=prefix)
    for name, path, method in (("host.session", "/session", "GET"), ("host.files", "/files/", "GET"),
                               ("host.reset", "/reset", "POST")):
        config.add_route(name, path)
        config.add_view(host_view(name), route_name=name, request_method=method, renderer="json")
    return config.make_wsgi_app()


@pytest.fixture
def host(tmp_path: Path) -> webtest.TestApp:
    return webtest.TestApp(make_host(settings_for_tests(tmp_path)), extra_environ={"HTTP_HOST": "example.com"})


def test_host_routes_are_not_shadowed(host: webtest.TestApp) -> None:
    assert host.get("/session").json == {"host": "host.session"}
    assert host.get("/files/").json == {"host": "host.files"}
    # The include no longer turns require_csrf on for the whole app.
    assert host.post("/reset").json == {"host": "host.reset"}
    assert host.get("/api/session").json == {"views": 1}


def test_upload_echo_and_download_under_the_prefix(host: webtest.TestApp) -> None:
    text = upload(host, [("a.txt", b"hello")], path="/api/upFile", csrf_path="/api/csrf", json=False).text
    assert text.startswith("/api/uploads/")
    assert host.get(text).body == b"hello"
    res = upload(host, [("b.txt", b"world")], path="/api/upFile", csrf_path="/api/csrf")
    url = res.json["files"][0]["url"]
    assert url.startswith("/api/uploads/") and host.get(url).body == b"world"
    host.get("/uploads/" + url.rsplit("/", 1)[1], status=404)


def test_tus_location_and_result_under_the_prefix(host: webtest.TestApp) -> None:
    loc = host.post("/api/files/", headers={**TUS, "Upload-Length": "3"}, status=201).headers["Location"]
    assert loc.startswith("/api/files/")
    res = host.patch(loc, b"abc", headers={**TUS, "Upload-Offset": "0",
                                           "Content-Type": "application/offset+octet-stream"}, status=204)
    assert res.headers["Sessup-File-Url"].startswith("/api/uploads/")
    assert host.get(res.headers["Sessup-File-Url"]).body == b"abc"


def test_script_name_and_public_url(tmp_path: Path) -> None:
    mounted = webtest.TestApp(make_host(settings_for_tests(tmp_path)),
                              extra_environ={"HTTP_HOST": "example.com", "SCRIPT_NAME": "/mount"})
    text = upload(mounted, [("a.txt", b"x")], path="/mount/api/upFile", csrf_path="/mount/api/csrf", json=False).text
    assert text.startswith("/mount/api/uploads/")
    public = webtest.TestApp(make_host(settings_for_tests(tmp_path, **{
        "sessup.public_url": "https://files.example.org/app"})), extra_environ={"HTTP_HOST": EVIL})
    text = upload(public, [("a.txt", b"x")], path="/api/upFile", csrf_path="/api/csrf", json=False).text
    assert text.startswith("https://files.example.org/app/api/uploads/")
    loc = public.post("/api/files/", headers={**TUS, "Upload-Length": "1"}, status=201).headers["Location"]
    assert loc.startswith("https://files.example.org/app/api/files/")


def test_hostile_host_never_comes_back(tmp_path: Path) -> None:
    app = webtest.TestApp(make_host(settings_for_tests(tmp_path)), extra_environ={"HTTP_HOST": EVIL})
    token = csrf_token(app, "/api/csrf")
    answers = [
        upload(app, [("a.txt", b"x")], path="/api/upFile", token=token, json=False),
        upload(app, [("a.txt", b"x")], path="/api/upFile", token=token),
        app.post("/api/files/", headers={**TUS, "Upload-Length": "1"}),
        app.post("/api/session/regenerate", headers={"X-CSRF-Token": token}),
        app.get("/api/upFile", status=405),
        app.get("/api/files/nope", headers=TUS, status=404),
    ]
    for res in answers:
        assert EVIL not in str(res.headers) and EVIL not in res.text


def test_renamed_and_left_out_routes(tmp_path: Path) -> None:
    app = webtest.TestApp(make_host(settings_for_tests(tmp_path, **{
        "sessup.routes.session": "", "sessup.routes.upload": "/send", "sessup.routes.tus": "/resumable"}),
        prefix=""))
    assert app.get("/session").json == {"host": "host.session"}  # left out: the host's answers
    assert upload(app, [("a.txt", b"x")], path="/send").json["files"][0]["size"] == 1
    app.post("/upFile", status=404)
    assert app.post("/resumable/", headers={**TUS, "Upload-Length": "1"}, status=201).headers[
        "Location"].startswith("/resumable/")


def test_methods_not_allowed_answer_405_with_allow(host: webtest.TestApp) -> None:
    for path, allow in (("/api/upFile", "POST"), ("/api/session/regenerate", "POST"),
                        ("/api/csrf", "GET"), ("/api/uploads/x.txt", "GET, HEAD")):
        res = host.request(path, method="PUT", status=405, headers={"Accept": "application/json"})
        assert res.headers["Allow"] == allow
        assert res.json["code"] == "method_not_allowed"
        assert res.headers["Cache-Control"] == "no-store"


def test_host_csrf_policy_is_the_hosts(tmp_path: Path) -> None:
    app = webtest.TestApp(make_host(settings_for_tests(tmp_path), host_csrf=True),
                          extra_environ={"HTTP_HOST": "example.com"})
    # The host's own POST follows the host's policy...
    app.post("/reset", status=400)
    # ...while the add-on's views check the add-on's token, whatever the host's policy.
    assert upload(app, [("a.txt", b"x")], path="/api/upFile", csrf_path="/api/csrf").json["files"]
    res = app.post("/api/upFile", params=[("inputFile", webtest.Upload("a.txt", b"x"))],
                   headers={"Accept": "application/json"}, status=403)
    assert res.json["code"] == "csrf_token_missing"
    assert "/csrf" in res.json["error"]  # the 403 says how to get a token


def test_code_configured_factory_is_an_isession(tmp_path: Path) -> None:
    factory = SessupSessionFactory("a-long-random-secret-for-this-test-0123456789", store="file",
                                   file_path=str(tmp_path / "sessions"), timeout=600, rolling=True)
    request = Request.blank("/")
    request.registry = Configurator().registry
    session = factory(request)
    assert verifyObject(ISession, session)
    config = Configurator()
    config.set_session_factory(factory)

    def count(request: Request) -> dict[str, int]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    config.add_route("count", "/count")
    config.add_view(count, route_name="count", renderer="json")
    app = webtest.TestApp(config.make_wsgi_app())
    assert [app.get("/count").json["n"] for _ in range(3)] == [1, 2, 3]
    assert "Max-Age=600" not in app.get("/count").headers.get("Set-Cookie", "")  # no cookie.max_age given
    assert any(p.name for p in (tmp_path / "sessions").rglob("*") if p.is_file())


@pytest.mark.parametrize("kwargs, key", [
    ({"timeout": 0}, "sessup.session.timeout"),
    ({"store": "mongo"}, "sessup.session.store"),
    ({"cookie_samesite": "none"}, "sessup.session.cookie.secure"),
    ({"store": "file"}, "sessup.session.file.path"),
    ({"table_name": "x"}, "sessup.session.table_name; did you mean sessup.session.table"),
    ({"max_lifetime": 60}, "sessup.session.max_lifetime"),
    ({"rotate_after": 600, "rotate_grace": 600}, "sessup.session.rotate_grace"),
])
def test_code_configured_factory_names_a_bad_argument(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        SessupSessionFactory("a-long-random-secret-for-this-test-0123456789", **kwargs)


def test_the_add_on_never_imports_the_demo() -> None:
    package = ROOT / "pyramid_sessup"
    offenders = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if relative.parts[0] == "demo":
            continue
        module = ".".join(("pyramid_sessup",) + relative.with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = module.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "include" and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
            if any(n == "pyramid_sessup.demo" or n.startswith("pyramid_sessup.demo.") or n in (".demo", "..demo")
                   for n in names):
                offenders.append(f"{relative}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("path", ["/api/uploads/%ff", "/api/files/%ff", "/api/session?x=%ff",
                                  "/api/upFile/%c3%28", "/elsewhere/%ff"])
def test_undecodable_urls_are_400_in_a_host_app(host: webtest.TestApp, path: str) -> None:
    """The route groups bring the 400 for URLs that are not UTF-8 (the router itself
    would fail with a 500 before any of their views runs)."""
    res = host.get(path, status="*")
    assert res.status_int == 400, res.status


def test_the_400_tween_is_added_once_for_all_groups_and_the_demo(tmp_path: Path) -> None:
    from pyramid_sessup.demo import main

    app = main({}, **settings_for_tests(tmp_path))
    tweens = [name for name, _ in app.registry.queryUtility(ITweens).implicit()]
    assert tweens.count("pyramid_sessup.badrequest.tween_factory") == 1


@pytest.mark.redis
def test_code_configured_factory_with_the_error_views_answers_503_when_the_store_is_down() -> None:
    """The README's factory snippet includes ``pyramid_sessup.errors``: a store that
    cannot be reached when the session loads is the promised 503 with Retry-After,
    not a 500 (the factory alone cannot register a view)."""
    from ..support import free_port

    def app(with_errors: bool) -> webtest.TestApp:
        config = Configurator()
        config.set_session_factory(SessupSessionFactory(
            "a-long-random-secret-for-this-test-0123456789", store="redis",
            url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.3, socket_timeout=0.3))
        if with_errors:
            config.include("pyramid_sessup.errors")

        def count(request: Request) -> dict[str, int]:
            request.session["n"] = request.session.get("n", 0) + 1
            return {"n": request.session["n"]}

        config.add_route("count", "/count")
        config.add_view(count, route_name="count", renderer="json")
        return webtest.TestApp(config.make_wsgi_app(), extra_environ={"HTTP_HOST": "example.com"})

    from pyramid_sessup.exceptions import StoreUnavailable
    from pyramid_sessup.signing import Signer, new_session_id

    # A validly signed ID: only then does loading the session ask the store.
    cookie = {"Cookie": "sessup=" + Signer(["a-long-random-secret-for-this-test-0123456789"]).sign(new_session_id())}
    res = app(True).get("/count", headers=cookie, status="*")
    assert res.status_int == 503 and res.headers["Retry-After"]
    with pytest.raises(StoreUnavailable):  # without the error views: Pyramid's 500
        app(False).get("/count", headers=cookie)
    readme = (ROOT / "README.md").read_text()
    assert 'config.include("pyramid_sessup.errors")' in readme
