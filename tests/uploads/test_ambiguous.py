"""Multipart a firewall and the app could read two ways is refused (400), so
what an inspecting proxy in front sees is what the app stores."""
from __future__ import annotations

from pathlib import Path

import pytest
import webtest

from .conftest import body, leftovers, part, post_body

AMBIGUOUS = {
    "two filename parameters": ['form-data; name="inputFile"; filename="a.png"; filename="b.html"'],
    "two filename parameters, other case": ['form-data; name="inputFile"; FILENAME="a.png"; filename="b.html"'],
    "two filename* parameters": ["form-data; name=\"inputFile\"; filename*=UTF-8''a.png; filename*=UTF-8''b.html"],
    "two name parameters": ['form-data; name="other"; name="inputFile"; filename="a.txt"'],
    "two Content-Disposition headers": ['form-data; name="inputFile"; filename="a.png"',
                                        'form-data; name="inputFile"; filename="b.html"'],
    "bare CR in the filename": ['form-data; name="inputFile"; filename="a\r.html"'],
    "bare CR in the name": ['form-data; name="input\rFile"; filename="a.txt"'],
    "bare LF in the filename": ['form-data; name="inputFile"; filename="a\n.html"'],
}


@pytest.mark.parametrize("label", list(AMBIGUOUS))
def test_ambiguous_part_headers_are_400_and_store_nothing(client: webtest.TestApp, upload_dir: Path,
                                                          label: str) -> None:
    first, *more = AMBIGUOUS[label]
    data = body(part("", b"<script>x</script>", disposition=first,
                     extra=[f"Content-Disposition: {d}" for d in more]))
    res = post_body(client, data, Accept="application/json")
    assert res.status_int == 400, res.text
    assert "Content-Disposition" in res.json["error"] or "CR" in res.json["error"]
    assert leftovers(upload_dir) == []


def test_two_content_type_headers_are_400(client: webtest.TestApp, upload_dir: Path) -> None:
    data = body(part("inputFile", b"x", filename="a.txt", content_type="text/plain",
                     extra=["Content-Type: text/html"]))
    res = post_body(client, data)
    assert res.status_int == 400 and "Content-Type" in res.text
    assert leftovers(upload_dir) == []


def test_ambiguous_text_fields_too(client: webtest.TestApp, upload_dir: Path) -> None:
    data = body(part("", b"v", disposition='form-data; name="a"; name="b"'),
                part("inputFile", b"x", filename="a.txt"))
    assert post_body(client, data).status_int == 400
    assert leftovers(upload_dir) == []


def test_browser_encoded_names_stay_accepted(client: webtest.TestApp) -> None:
    # What browsers send (HTML's form encoding: %0D, %0A, %22), and filename* alone, are unambiguous.
    for disposition in ['form-data; name="inputFile"; filename="cr%0D%0Alf.txt"',
                        "form-data; name=\"inputFile\"; filename*=UTF-8''na%C3%AFve.txt",
                        'form-data; name="inputFile"; filename="plain.txt"; filename*=UTF-8\'\'other.txt']:
        res = post_body(client, body(part("", b"ok", disposition=disposition)))
        assert res.status_int == 200, (disposition, res.text)
