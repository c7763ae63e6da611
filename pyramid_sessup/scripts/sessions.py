"""``sessup-sessions``: inspect and clean the session store of an application.

In the style of Pyramid's p-scripts, the INI file comes first::

    sessup-sessions production.ini count
    sessup-sessions production.ini list
    sessup-sessions production.ini show ID
    sessup-sessions production.ini delete ID
    sessup-sessions production.ini purge-expired
    sessup-sessions production.ini list --user USER_ID
    sessup-sessions production.ini revoke --user USER_ID [--except SESSION_ID]
    sessup-sessions production.ini revoke --user USER_ID HANDLE
    sessup-sessions production.ini revoke SESSION_ID

It reads the ``sessup.*`` settings of the INI's app section (``INI#name``
picks another section) and talks to the store they select, so it works the
same for every store.  ``count`` and ``list`` see live sessions only, never the
tombstone a logged-out ID leaves behind; ``delete`` makes the ID such a
tombstone (dead for one session lifetime).  ``purge-expired`` removes expired
sessions and tombstones, and prunes the user index of dead sessions: the cron
job of the file and PostgreSQL stores; Redis expires records by itself (it
reports 0).

Sessions per user (:mod:`pyramid_sessup.users`): ``list --user`` prints one
line per live session signed in as that user, most recently seen first, with
tab-separated fields: its handle (never its ID), created, last seen (UTC, ISO
8601), User-Agent and client address (``-`` when not recorded).  ``revoke
--user`` ends every session of the user ("sign out everywhere"), but the one
named by ``--except``; ``revoke --user ID HANDLE`` ends the one with that
handle; ``revoke SESSION_ID`` ends one session and takes it out of its user's
list.  A revoked session is dead at once: its next request is anonymous.

Exit status: 0 success, 1 no such session (nothing to show, delete or revoke),
2 usage or configuration error, 3 store unavailable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Sequence, TextIO

from pyramid.exceptions import ConfigurationError
from pyramid.paster import get_appsettings, setup_logging

from ..exceptions import StoreUnavailable
from ..settings import parse_settings
from ..stores import make_store
from ..stores.base import SessionStore, valid_session_id
from ..users import HANDLE_LENGTH, UsersConfig, clean_agent, revoke_all, revoke_handle, revoke_id, sessions_of

COMMANDS = ("count", "list", "show", "delete", "purge-expired", "revoke")
#: Options that take a value (folded into ``--name=value``, so a value may start with "-").
_VALUED = ("--user", "--except")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessup-sessions",
        description="Count, list, show, delete, revoke or purge the sessions of a pyramid_sessup application.",
    )
    parser.add_argument("config_uri", help="the INI file, e.g. production.ini (or production.ini#main)")
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("session_id", nargs="?",
                        help="the session ID (show, delete, revoke), or with revoke --user a session's handle")
    parser.add_argument("--user", metavar="USER_ID", help="the sessions signed in as this user (list, revoke)")
    parser.add_argument("--except", dest="keep", metavar="SESSION_ID",
                        help="with revoke --user: the session to keep")
    return parser


def _arguments(argv: list[str]) -> list[str]:
    """``argv`` with option values folded in and every positional after ``--``:
    a session ID or a handle may start with "-" and still be a value."""
    options, positionals = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _VALUED and i + 1 < len(argv):
            options.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        if arg.startswith(tuple(name + "=" for name in _VALUED)) or arg in ("-h", "--help") or arg in _VALUED:
            options.append(arg)
        elif arg != "--":
            positionals.append(arg)
        i += 1
    return options + ["--"] + positionals


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _bad_id(err: TextIO) -> int:
    err.write("sessup-sessions: not a session ID (43 characters of A-Z a-z 0-9 _ -)\n")
    return 2


def run_users(store: SessionStore, users: UsersConfig, command: str, user: str | None, target: str | None,
              keep: str | None, out: TextIO, err: TextIO) -> int:
    """``list --user`` and the ``revoke`` forms; returns the exit status."""
    if command == "list":
        assert user is not None
        for info in sessions_of(store, users, user):
            fields = [info.handle, _when(info.created), _when(info.last_seen),
                      clean_agent(info.user_agent) or "-", clean_agent(info.client_addr) or "-"]
            out.write("\t".join(fields) + "\n")
        return 0
    if user is None:  # revoke SESSION_ID
        if not target:
            err.write("sessup-sessions: revoke needs a session ID, or --user USER_ID\n")
            return 2
        if not valid_session_id(target):
            return _bad_id(err)
        if not revoke_id(store, users, target):
            err.write(f"sessup-sessions: no readable session {target}; nothing is left under that ID\n")
            return 1
        out.write(f"revoked {target}\n")
        return 0
    if target:  # revoke --user USER_ID HANDLE
        if keep:
            err.write("sessup-sessions: --except goes with revoke --user alone, not with a handle\n")
            return 2
        if len(target) != HANDLE_LENGTH:
            err.write(f"sessup-sessions: not a session handle ({HANDLE_LENGTH} characters, as list --user shows)\n")
            return 2
        if revoke_handle(store, users, user, target) is None:
            err.write(f"sessup-sessions: that user has no session {target}\n")
            return 1
        out.write(f"revoked {target}\n")
        return 0
    if keep is not None and not valid_session_id(keep):
        return _bad_id(err)
    revoked = revoke_all(store, users, user, keep=keep)
    if not revoked:
        err.write("sessup-sessions: that user has no session to revoke\n")
        return 1
    out.write(f"revoked {len(revoked)} session(s)\n")
    return 0


def run(store: SessionStore, command: str, sid: str | None, out: TextIO, err: TextIO) -> int:
    """Run one command against ``store``; returns the exit status."""
    if command in ("show", "delete"):
        if not sid:
            err.write(f"sessup-sessions: {command} needs a session ID\n")
            return 2
        if not valid_session_id(sid):
            return _bad_id(err)
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
    args = _parser().parse_args(_arguments(argv))
    by_user = args.command == "revoke" or (args.command == "list" and args.user is not None)
    if args.user is not None and not by_user:
        err.write(f"sessup-sessions: --user goes with list and revoke, not {args.command}\n")
        return 2
    if args.keep is not None and (args.command != "revoke" or args.user is None):
        err.write("sessup-sessions: --except goes with revoke --user\n")
        return 2
    if args.user is not None and (not args.user or len(args.user) > 1024 or "\x00" in args.user):
        err.write("sessup-sessions: --user needs a user ID (at most 1024 characters)\n")
        return 2
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
        if by_user:
            status = run_users(store, UsersConfig.from_values(values), args.command, args.user, args.session_id,
                               args.keep, out, err)
        else:
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
