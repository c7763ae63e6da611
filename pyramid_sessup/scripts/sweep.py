"""``sessup-sweep``: remove stale temporary upload files.

::

    sessup-sweep production.ini                # files older than sessup.upload.temp_max_age
    sessup-sweep production.ini --max-age 600  # or older than 600 seconds

Temporary files live in ``<sessup.upload.path>/.tmp``; a worker killed
mid-upload (``kill -9``, OOM, power loss) leaves its partial file there.  The
application sweeps them when it starts; run this from cron for long-running
servers.  Files still being written are recent, so they are never removed.
Unfinished resumable (tus) uploads past ``sessup.upload.tus_expiry`` go too, and
partial uploads (concatenation) that were never joined.

Exit status: 0 success, 2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_appsettings, setup_logging

from ..settings import parse_settings
from ..tus.state import sweep as sweep_tus
from ..uploads.storage import UploadStorage


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
    if not values.upload.path:
        sys.stderr.write("sessup-sweep: sessup.upload.path is not set\n")
        return 2
    max_age = values.upload.temp_max_age if args.max_age is None else args.max_age
    if max_age < 0:
        sys.stderr.write("sessup-sweep: --max-age must be at least 0\n")
        return 2
    removed = UploadStorage.from_settings(values).sweep(max_age)
    expired = sweep_tus(values.upload.path, values.upload.tus_expiry)
    print(f"removed {removed} temporary file(s) and {expired} expired resumable upload(s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
