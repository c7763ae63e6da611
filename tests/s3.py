"""An S3-compatible server for the tests: ``moto_server`` (from the testing
extra) as its own HTTP process on a loopback port.  Nothing is patched in
the test process: the add-on and the tests reach it over HTTP with boto3,
exactly as they would reach MinIO or AWS.
"""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .support import free_port, unavailable

MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))
#: Any credentials do for moto; the add-on gets them through its settings.
ACCESS_KEY = "sessup-test-key"
SECRET_KEY = "sessup-test-secret-never-logged-0123456789"
REGION = "us-east-1"
MiB = 1024 * 1024
_buckets = itertools.count(1)


class S3Server:
    """A running ``moto_server`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._client: Any = None

    def client(self) -> Any:
        """A boto3 client of the tests' own (not the add-on's)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY,
                config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                              response_checksum_validation="when_required"))
        return self._client

    def settings(self, bucket: str, prefix: str = "uploads/", **extra: str) -> dict[str, str]:
        """``sessup.upload.*`` settings that store in ``bucket`` (5 MiB parts:
        S3's minimum, so that multipart uploads happen at test sizes)."""
        return {
            "sessup.upload.storage": "s3",
            "sessup.upload.s3.bucket": bucket,
            "sessup.upload.s3.prefix": prefix,
            "sessup.upload.s3.endpoint_url": self.url,
            "sessup.upload.s3.region": REGION,
            "sessup.upload.s3.addressing_style": "path",
            "sessup.upload.s3.access_key_id": ACCESS_KEY,
            "sessup.upload.s3.secret_access_key": SECRET_KEY,
            "sessup.upload.s3.part_size": str(5 * MiB),
            **extra,
        }

    def new_bucket(self) -> str:
        name = f"sessup-test-{os.getpid()}-{next(_buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))

    def unfinished(self, bucket: str) -> list[str]:
        """Keys of every unfinished multipart upload in ``bucket``."""
        pages = self.client().get_paginator("list_multipart_uploads").paginate(Bucket=bucket)
        return sorted(up["Key"] for page in pages for up in page.get("Uploads", ()))

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def drop_bucket(self, bucket: str) -> None:
        """Remove ``bucket`` and everything in it (moto keeps objects in memory)."""
        client = self.client()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket)
        for page in pages:
            for up in page.get("Uploads", ()):
                client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        for key in self.keys(bucket):
            client.delete_object(Bucket=bucket, Key=key)
        client.delete_bucket(Bucket=bucket)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_s3_server(timeout: float = 60.0) -> S3Server:
    """Start ``moto_server`` on a free loopback port and wait until it answers."""
    executable = MOTO_SERVER if os.path.exists(MOTO_SERVER) else shutil.which("moto_server")
    if not executable:
        unavailable("moto_server is not installed (pip install -e '.[testing]')")
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                                stderr=subprocess.STDOUT)
    server = S3Server(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            unavailable(f"moto_server exited with {proc.returncode}: {log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(server.url + "/", timeout=2) as res:
                res.read()
            return server
        except urllib.error.HTTPError as exc:  # an HTTP answer means it is up
            exc.close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    unavailable(f"moto_server did not answer on port {port} within {timeout}s")
