"""The upload form on object storage: files kept across a failed validation
are temporary objects of the bucket, stored (copied to their final names) once
the form is valid; an oversized file is dropped from the bucket at once."""
from __future__ import annotations

from typing import Any

import webtest

from ..s3 import S3Server
from .conftest import FormClient, errors, kept_uids


def test_kept_files_live_in_the_bucket_until_stored(make_app: Any, s3_server: S3Server, s3_bucket: str) -> None:
    settings = {**s3_server.settings(s3_bucket), "sessup.upload.max_file_size": "1000",
                "sessup.upload.max_total_size": "100000"}
    form = FormClient(webtest.TestApp(make_app(**settings), extra_environ={"HTTP_HOST": "example.com"}))
    form.open()

    def objects() -> tuple[list[str], list[str]]:
        keys = s3_server.keys(s3_bucket)
        assert s3_server.unfinished(s3_bucket) == []
        return ([k for k in keys if k.startswith("uploads/.tmp/")],
                [k for k in keys if not k.startswith("uploads/.tmp/")])

    failed = form.post([("a.txt", b"first"), ("big.bin", b"x" * 1001), ("b.txt", b"second")], description="",
                       status=400)
    assert "big.bin is 1001 bytes; the limit is 1000 bytes per file." in errors(failed.text)
    uids = kept_uids(failed.text)
    temps, stored = objects()
    assert len(uids) == 2 and len(temps) == 2 and stored == []

    done = form.post([], description="fixed", keep=uids, status=303).follow()  # redirect after POST
    temps, stored = objects()
    assert temps == [] and len(stored) == 2
    assert sorted(s3_server.read(s3_bucket, k) for k in stored) == [b"first", b"second"]
    for key in stored:
        assert f"/uploads/{key.removeprefix('uploads/')}" in done.text
        assert form.app.get(f"/uploads/{key.removeprefix('uploads/')}").body in (b"first", b"second")
