"""``sessup-sweep``: remove what interrupted uploads left behind.

::

    sessup-sweep production.ini                # older than sessup.upload.temp_max_age
    sessup-sweep production.ini --max-age 600  # or older than 600 seconds

A worker killed mid-upload (``kill -9``, OOM, power loss) leaves its partial
file behind: in ``<sessup.upload.path>/.tmp``, or with
``sessup.upload.storage = s3`` an unfinished multipart upload or a temporary
object under ``<prefix>.tmp/``.  The application sweeps them when it starts;
run this from cron for long-running servers.  Files still being written are
recent, so they are never removed.  Unfinished resumable (tus) uploads past
``sessup.upload.tus_expiry`` go too (in the upload directory's ``.tus``, or
with ``s3`` their multipart uploads, staging and state objects under
``<prefix>.tus/``), and partial uploads (concatenation) that were never joined.

Exit status: 0 success, 1 the object storage did not answer, 2 usage or
configuration error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_appsettings, setup_logging

from ..exceptions import StorageUnavailable
from ..settings import parse_settings
from ..tus.state import make_tus_store
from ..uploads.storage import make_storage


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sessup-sweep",
                                     description="Remove stale temporary upload files of a pyramid_sessup application.")
    parser.add_argument("config_uri", help="the INI file, e.g. production.ini (or production.ini#main)")
    parser.add_argument("--max-age", type=int, default=None, metavar="SECONDS",
                        help="remove temporary files not modified for this long "
                             "(default: sessup.upload.temp_max_age)")
    args = parser.parse_args(argv)
    try:
        setup_logging(args.config_uri)
        values = parse_settings(get_appsettings(args.config_uri))
    except (ConfigurationError, OSError, LookupError) as exc:
        sys.stderr.write(f"sessup-sweep: {exc}\n")
        return 2
    if not values.upload.enabled:
        sys.stderr.write("sessup-sweep: sessup.upload.path is not set\n")
        return 2
    max_age = values.upload.temp_max_age if args.max_age is None else args.max_age
    if max_age < 0:
        sys.stderr.write("sessup-sweep: --max-age must be at least 0\n")
        return 2
    try:
        storage = make_storage(values)
        removed = storage.sweep(max_age)
        expired = make_tus_store(storage, values).sweep()
    except (StorageUnavailable, ConfigurationError) as exc:
        sys.stderr.write(f"sessup-sweep: {exc}\n")
        return 1
    print(f"removed {removed} temporary file(s) and {expired} expired resumable upload(s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
