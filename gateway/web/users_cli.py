"""``meter-gateway user add|remove|list``: the technician accounts of the page.

A password is never an argument (it would sit in the shell history and in ``ps``): ``add`` asks for
it twice on the terminal, or reads one line from standard input with ``--password-stdin`` for
scripts (``printf '%s\\n' "$PW" | meter-gateway user add alice --password-stdin``). Run on the box,
as root or as the gateway's user; the file stays the gateway user's. The running daemon picks up
the change at once: a removed user, or one given a new password, is signed out everywhere.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from gateway.errors import ConfigError
from gateway.web.users import UserError, UserStore, check_password, check_username

DEFAULT_DATA_DIR = "/var/lib/meter-gateway"
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def _store(args: argparse.Namespace) -> UserStore:
    if args.config:
        from gateway.config import load_config

        return UserStore(load_config(args.config).data_dir)
    return UserStore(Path(args.data_dir))


def _read_password(name: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise ConfigError("--password-stdin: standard input is empty; send the password as one line")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ConfigError("no terminal to ask for the password: use --password-stdin to read it from standard input")
    first = getpass.getpass(f"Password for {name}: ")
    check_password(name, first)  # say so before asking again
    if getpass.getpass("Again: ") != first:
        raise UserError("the two passwords differ; nothing was changed")
    return first


def cmd_add(args: argparse.Namespace) -> int:
    name = check_username(args.name)
    store = _store(args)
    existed = name in store.users()
    if existed and not args.replace:
        raise UserError(f"user {name!r} exists; give --replace to set a new password (this ends their sessions)")
    password = _read_password(name, args.password_stdin)
    store.set_password(name, password, create=True, replace=args.replace)
    print(f"user {name} {'has a new password' if existed else 'added'}; sign in at the gateway's page "
          f"(accounts in {store.path})")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    store.remove(args.name)
    print(f"user {args.name} removed; their sessions end at their next request")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    users = store.users()
    if store.problem:
        raise ConfigError(store.problem)
    if not users:
        print(f"no users yet ({store.path}); add one with: meter-gateway user add NAME", file=sys.stderr)
        return EXIT_OK
    width = max(len(n) for n in users)
    for user in sorted(users.values(), key=lambda u: u.name):
        print(f"{user.name:{width}}  added {user.created}  password set {user.changed}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    users = sub.add_parser("user", help="technician accounts for the status page")
    usub = users.add_subparsers(dest="user_command", required=True, metavar="ACTION")

    def where(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--config", help="the gateway's config (its data_dir holds the accounts)")
        group.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"default {DEFAULT_DATA_DIR}")

    p = usub.add_parser("add", help="add a user (the password is asked twice, never given on the command line)")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="read the password as one line from standard input")
    p.add_argument("--replace", action="store_true", help="set a new password for an existing user")
    where(p)
    p.set_defaults(func=cmd_add)

    p = usub.add_parser("remove", help="remove a user (their sessions end)")
    p.add_argument("name")
    where(p)
    p.set_defaults(func=cmd_remove)

    p = usub.add_parser("list", help="list users")
    where(p)
    p.set_defaults(func=cmd_list)
