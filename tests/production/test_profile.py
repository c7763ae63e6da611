"""``pserve production.ini``: gunicorn with one worker per core, the port from
pserve's ``http_port`` variable, quiet logs under load; the server runner's
options; development.ini still on waitress."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pyramid.exceptions import ConfigurationError

from pyramid_sessup.serving import cores, gunicorn_options

from ..support import ROOT, free_port, running_server
from .conftest import Browser, Stack


def test_runner_options() -> None:
    assert gunicorn_options({}, {"workers": "auto"}) == {"host": "127.0.0.1", "port": "6543",
                                                         "workers": str(cores())}
    assert gunicorn_options({"http_port": "8080"}, {"host": "::1", "port": "6543"})["port"] == "8080"
    assert gunicorn_options({}, {"port": "7000", "workers": "3"}) == {"host": "127.0.0.1", "port": "7000",
                                                                      "workers": "3"}
    assert gunicorn_options({}, {"bind": "unix:/run/app.sock"}) == {"bind": "unix:/run/app.sock"}
    with pytest.raises(ConfigurationError, match="bind alone"):
        gunicorn_options({"http_port": "8080"}, {"bind": "127.0.0.1:6543"})
    assert 1 <= cores() <= (os.cpu_count() or 1)


def test_production_ini_as_shipped_runs_gunicorn_on_the_default_port() -> None:
    """The shipped [server:main]: gunicorn's gthread workers, one per core, 6543 by default."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "production.ini")
    server = dict(parser["server:main"])
    assert server["use"] == "egg:pyramid_sessup#gunicorn"
    assert server["worker_class"] == "gthread" and server["workers"] == "auto"
    assert gunicorn_options({}, {k: v for k, v in server.items() if k != "use"})["port"] == "6543"


@pytest.mark.server
def test_one_worker_per_core_and_no_log_line_per_request(stack: Stack) -> None:
    """A mixed load (pages, sessions, uploads, refusals, 404s) adds no line to the log."""
    assert len(stack.server.children()) == cores()
    log = stack.server.log()
    assert "Using worker: gthread" in log and "Control socket" not in log
    before = log.count("\n")

    def load(base: str) -> None:
        browser = Browser(base).login()
        body = (b'--b\r\nContent-Disposition: form-data; name="inputFile"; filename="a.txt"\r\n\r\n'
                + os.urandom(4096) + b"\r\n--b--\r\n")
        for _ in range(25):
            assert browser.request("GET", "/")[0] == 200
            assert browser.request("GET", "/session")[0] == 200
            assert browser.request("POST", "/upFile", body, {"Content-Type": "multipart/form-data; boundary=b",
                                                             "X-CSRF-Token": browser.token})[0] == 200
            no_token = {"Content-Type": "multipart/form-data; boundary=b"}
            assert browser.request("POST", "/upFile", body, no_token)[0] == 403
            assert browser.request("GET", "/no/such/page")[0] == 404

    threads = [threading.Thread(target=load, args=(base,))
               for base in (stack.server.url, stack.front.url) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert stack.server.log().count("\n") == before, stack.server.log()[-2000:]


@pytest.mark.server
def test_development_ini_still_runs_on_waitress(tmp_path: Path) -> None:
    text = (ROOT / "development.ini").read_text()
    assert "use = egg:pyramid_sessup#waitress" in text  # waitress, with the one-line taken port
    port = free_port()
    ini = tmp_path / "development.ini"
    ini.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "SESSUP_SECRET"}
    with running_server(ini, port, env=env, args=[f"http_port={port}"]) as server:
        assert Browser(server.url).request("GET", "/session")[0] == 200
        assert server.children() == []  # waitress: one process
    assert "[pyramid_sessup.serve:" in server.log() and f":{port}" in server.log()  # serve.py's waitress


def test_deployment_guide_shows_the_shipped_configuration() -> None:
    """docs/deployment.md quotes deploy/nginx.conf whole, and production.ini's server keys as they are."""
    import re

    guide = (ROOT / "docs" / "deployment.md").read_text()
    assert "```nginx\n" + (ROOT / "deploy" / "nginx.conf").read_text() + "```" in guide
    shipped = (ROOT / "production.ini").read_text().splitlines()
    [block] = [b for b in re.findall(r"```ini\n(.*?)```", guide, re.S) if "egg:pyramid_sessup#gunicorn" in b]
    for line in block.strip().splitlines():
        assert line in shipped, line


@pytest.mark.server
def test_access_lines_when_asked_for(tmp_path: Path) -> None:
    """gunicorn builds access-log lines only when they are written (AccessLogger): the
    shipped INI writes none (the test above), ``accesslog = -`` writes one per request."""
    from ..support import start_production, write_production_ini

    ini = write_production_ini(tmp_path, {"sessup.session.file.path": str(tmp_path / "sessions"),
                                          "sessup.upload.path": str(tmp_path / "uploads")},
                               server={"accesslog": "-", "workers": "1"})
    port = free_port()
    server = start_production(ini, port)
    try:
        for _ in range(3):
            assert Browser(server.url).request("GET", "/no/such/page")[0] == 404
    finally:
        server.stop()
    assert server.log().count('"GET /no/such/page HTTP/1.1" 404') == 3, server.log()[-2000:]
