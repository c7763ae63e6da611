"""``sessup-sessions``: inspect and clean the session store of an application.

In the style of Pyramid's p-scripts, the INI file comes first::

    sessup-sessions production.ini count
    sessup-sessions production.ini list
    sessup-sessions production.ini show ID
    sessup-sessions production.ini delete ID
    sessup-sessions production.ini purge-expired

It reads the ``sessup.*`` settings of the INI's app section (``INI#name``
picks another section) and talks to the store they select, so it works the
same for every store.  ``count`` and ``list`` see live sessions only, never the
tombstone a logged-out ID leaves behind; ``delete`` makes the ID such a
tombstone (dead for one session lifetime).  ``purge-expired`` removes expired
sessions and tombstones: the cron job of the file and PostgreSQL stores; Redis
expires records by itself (it reports 0).

Exit status: 0 success, 1 no such session, 2 usage or configuration error,
3 store unavailable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Sequence, TextIO

from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_appsettings, setup_logging

from ..exceptions import StoreUnavailable
from ..settings import parse_settings
from ..stores import make_store
from ..stores.base import SessionStore, valid_session_id

COMMANDS = ("count", "list", "show", "delete", "purge-expired")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessup-sessions",
        description="Count, list, show, delete or purge the sessions of a pyramid_sessup application.",
    )
    parser.add_argument("config_uri", help="the INI file, e.g. production.ini (or production.ini#main)")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("session_id", nargs="?", help="the session ID (show, delete)")
    return parser


def run(store: SessionStore, command: str, sid: str | None, out: TextIO, err: TextIO) -> int:
    """Run one command against ``store``; returns the exit status."""
    if command in ("show", "delete"):
        if not sid:
            err.write(f"sessup-sessions: {command} needs a session ID\n")
            return 2
        if not valid_session_id(sid):
            err.write("sessup-sessions: not a session ID (43 characters of A-Z a-z 0-9 _ -)\n")
            return 2
    if command == "count":
        out.write(f"{store.count()}\n")
    elif command == "list":
        for session_id in store.ids():
            out.write(session_id + "\n")
    elif command == "show":
        assert sid is not None
        data = store.load(sid, touch=False)  # looking must not extend the session's life
        if data is None:
            err.write(f"sessup-sessions: no session {sid}\n")
            return 1
        out.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    elif command == "delete":
        assert sid is not None
        existed = store.load(sid, touch=False) is not None
        # Also kills a corrupt record, which load() cannot read, and the session a
        # rotated ID still forwards to.
        store.kill(sid)
        if not existed:
            err.write(f"sessup-sessions: no readable session {sid}; nothing is left under that ID\n")
            return 1
        out.write(f"deleted {sid}\n")
    elif command == "purge-expired":
        purged = store.purge_expired()
        out.write(f"purged {purged} expired record(s)\n")
    return 0


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 3 and argv[1] in ("show", "delete") and argv[2] not in ("-h", "--help"):
        # A session ID may start with "-": it is the ID, not an option.
        argv.insert(2, "--")
    args = _parser().parse_args(argv)
    try:
        setup_logging(args.config_uri)
        values = parse_settings(get_appsettings(args.config_uri))
        store = make_store(values)
    except (ConfigurationError, FileNotFoundError, LookupError) as exc:
        err.write(f"sessup-sessions: {exc}\n")
        return 2
    if store.name == "memory":
        err.write("sessup-sessions: note: the memory store lives inside each app process; "
                  "this command sees an empty one\n")
    try:
        status = run(store, args.command, args.session_id, out, err)
        out.flush()
        return status
    except StoreUnavailable as exc:
        err.write(f"sessup-sessions: {exc}\n")
        return 3
    except BrokenPipeError:
        # The reader left (``| head -1``): stop quietly, as cat or ls do.
        _silence_stdout(out)
        return 0
    finally:
        store.close()


def _silence_stdout(out: TextIO) -> None:
    """Point stdout at /dev/null so Python's exit-time flush of the broken pipe
    does not print a second error (the recipe of the ``signal`` module's docs)."""
    try:
        fileno = out.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
