"""``python -m cloud_sync.receiver``: serve, enrol gateways, pull from gateways.

Commands (``--db`` is ``postgresql://user@host:port/db``, ``sqlite:///path`` or a file path)::

    python -m cloud_sync.receiver [serve] --db DB [--listen H] [--port P] [--token-file F] [--enroll GW=GKEY]
    python -m cloud_sync.receiver enrol --db DB GATEWAY GKEY [--token-out FILE]   # prints the token once
    python -m cloud_sync.receiver list --db DB
    python -m cloud_sync.receiver revoke --db DB GATEWAY
    python -m cloud_sync.receiver rotate-token --db DB GATEWAY [--token-out FILE]
    python -m cloud_sync.receiver pull --db DB --gateways FILE [--once] [--every S]
    python -m cloud_sync.receiver migrate --db DB

Exit codes: 0 ok, 2 bad usage or configuration, 1 other failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from cloud_sync.receiver.enrolment import EnrolmentError, new_token, parse_enroll_option, token_digest
from cloud_sync.receiver.store import CreditStore, ReceiverConfigError, StoreUnavailable, is_database_url, open_store

PROG = "python -m cloud_sync.receiver"
COMMANDS = ("serve", "enrol", "list", "revoke", "rotate-token", "pull", "migrate")
PULL_EVERY_S = 300.0
"""Default pause between pull rounds: a box closes an interval every 15 minutes."""


class _Usage(Exception):
    """Bad usage or configuration: exit 2 with the message."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _configure_logs() -> None:
    renderer: structlog.typing.Processor = (structlog.dev.ConsoleRenderer(colors=False) if sys.stderr.isatty()
                                            else structlog.processors.JSONRenderer())
    structlog.configure(processors=[structlog.processors.add_log_level,
                                    structlog.processors.TimeStamper(fmt="iso", utc=True), renderer],
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)


def _shown_db(db: str) -> str:
    if is_database_url(db):
        from cloud_sync.receiver.store_pg import redacted

        return redacted(db)
    return db


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Usage(f"--token-file {path}: cannot read it ({exc})") from None
    if not token:
        raise _Usage(f"--token-file {path} is empty; write the bearer token the gateways send into it")
    return token


def _write_secret(path: Path, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    path.chmod(0o600)


def _give_token(token: str, out: Path | None, gateway: str) -> None:
    if out is None:
        print(token)
        print(f"(the bearer token of {gateway}; it is shown once and stored only hashed: put it in the box's "
              "billing API token_file, mode 0600)", file=sys.stderr)
    else:
        _write_secret(out, token)
        print(f"token of {gateway} written to {out} (0600); it is stored here only hashed", file=sys.stderr)


async def _with_store(db: str, work: Callable[[CreditStore], Awaitable[int]]) -> int:
    store = await open_store(db)
    try:
        return await work(store)
    finally:
        await store.close()


async def _serve(args: argparse.Namespace, token: str | None, enrolled: list[tuple[str, str]]) -> int:
    import uvicorn

    from cloud_sync.receiver.app import create_app

    store = await open_store(args.db)
    try:
        for gateway, key in enrolled:
            found = await store.ensure_enrolled(gateway, key, _now_ms())
            if not found.active:
                print(f"note: --enroll {gateway}: this gateway is revoked in the store and stays revoked",
                      file=sys.stderr)
        known = await store.gateways()
        with_token = sum(1 for g in known if g.active and g.has_token)
        if token is None and not args.insecure_no_auth and not with_token:
            print(f"note: no gateway can authenticate yet: enrol one ({PROG} enrol --db ... GATEWAY GKEY) and give "
                  "the box its token", file=sys.stderr)
        server = uvicorn.Server(uvicorn.Config(create_app(store, token, insecure_no_auth=args.insecure_no_auth),
                                               host=args.listen, port=args.port, log_level="warning",
                                               access_log=False, lifespan="off"))
        print(f"receiver: http://{args.listen}:{args.port} store {_shown_db(args.db)}, {len(known)} gateway(s) "
              f"enrolled, {with_token} with their own token", file=sys.stderr, flush=True)
        await server.serve()
    finally:
        await store.close()
    return 0


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run the receiver on uvloop when it is installed (the ``receiver-pg`` extra brings it), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _serve_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} [serve]", description="Serve the central billing API.")
    parser.add_argument("--db", required=True, help="postgresql://user@host:port/db, sqlite:///path or a file path")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--enroll", action="append", default=[], metavar="GATEWAY=GKEY",
                        help="enrol this gateway with this public key unless it is enrolled (repeatable; for the "
                             "demo and tests: use the enrol command otherwise)")
    parser.add_argument("--token-file", type=Path,
                        help="a shared (operator) token: it may send for any enrolled gateway and read everything")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="accept requests without any token: for tests on loopback only, never in production")
    args = parser.parse_args(argv)
    if args.token_file and args.insecure_no_auth:
        parser.error("give either --token-file or --insecure-no-auth, not both")
    try:
        enrolled = [parse_enroll_option(e) for e in args.enroll]
        if len({g for g, _ in enrolled}) != len(enrolled):
            raise _Usage("--enroll: a gateway is enrolled twice")
        token = _read_token(args.token_file) if args.token_file else None
    except (EnrolmentError, _Usage) as exc:
        parser.error(str(exc))
    if args.insecure_no_auth:
        print(f"WARNING: receiver running with no authentication (--insecure-no-auth): anyone who can reach "
              f"{args.listen}:{args.port} may submit and read credits; enrol gateways and drop it outside tests",
              file=sys.stderr, flush=True)
    return _run(_serve(args, token, enrolled))


def _admin_command(name: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}")
    parser.add_argument("--db", required=True, help="postgresql://user@host:port/db, sqlite:///path or a file path")
    if name in ("enrol", "revoke", "rotate-token"):
        parser.add_argument("gateway", help="the gateway_id of the box's config")
    if name == "enrol":
        parser.add_argument("key", help="the box's public key, as `meter-gateway identity` prints it (G...)")
    if name in ("enrol", "rotate-token"):
        parser.add_argument("--token-out", type=Path, help="write the token to this file (0600) instead of stdout")
    if name == "pull":
        parser.add_argument("--gateways", type=Path, required=True, help="TOML file: [[gateway]] id, url, token_file")
        parser.add_argument("--once", action="store_true", help="one round over every gateway, then exit")
        parser.add_argument("--every", type=float, default=PULL_EVERY_S, help="seconds between rounds")
        parser.add_argument("--limit", type=int, default=None, help="credits per page (1-1000)")
    args = parser.parse_args(argv)

    async def enrol(store: CreditStore) -> int:
        from cloud_sync.receiver.enrolment import check_gateway_id, check_public_key

        gateway, key = check_gateway_id(args.gateway), check_public_key(args.key)
        token = new_token()
        await store.enrol(gateway, key, token_digest(token), _now_ms())
        _give_token(token, args.token_out, gateway)
        return 0

    async def rotate(store: CreditStore) -> int:
        token = new_token()
        await store.set_token(args.gateway, token_digest(token))
        _give_token(token, args.token_out, args.gateway)
        return 0

    async def revoke(store: CreditStore) -> int:
        await store.revoke(args.gateway, _now_ms())
        print(f"{args.gateway} revoked: its next batch is refused (403); its stored credits stay", file=sys.stderr)
        return 0

    async def listing(store: CreditStore) -> int:
        print(f"{'gateway':<24} {'state':<8} {'token':<6} {'enrolled (UTC)':<20} key")
        for g in await store.gateways():
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(g.enrolled_ms / 1000))
            print(f"{g.gateway:<24} {'active' if g.active else 'revoked':<8} {'yes' if g.has_token else 'no':<6} "
                  f"{when:<20} {g.public_key}")
        return 0

    async def migrate(store: CreditStore) -> int:
        print(f"{_shown_db(args.db)}: schema is current", file=sys.stderr)
        return 0

    async def pull(store: CreditStore) -> int:
        from cloud_sync.receiver.pull import PAGE_LIMIT, load_sources, pull_round

        sources = load_sources(args.gateways)
        limit = args.limit or PAGE_LIMIT
        if not 1 <= limit <= 1000:
            raise _Usage("--limit must be 1..1000 (what a gateway serves per page)")
        while True:
            results = await pull_round(store, sources, limit=limit)
            for result in results:
                print(result.line(), flush=True)
            if args.once:
                return 1 if any(r.error for r in results) else 0
            await asyncio.sleep(args.every)

    work = {"enrol": enrol, "rotate-token": rotate, "revoke": revoke, "list": listing, "migrate": migrate,
            "pull": pull}[name]
    try:
        return asyncio.run(_with_store(args.db, work))
    except (EnrolmentError, _Usage) as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the process's entry point: it owns the logging set-up
        _configure_logs()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    try:
        if command == "serve":
            return _serve_command(argv)
        return _admin_command(command, argv)
    except ReceiverConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, StoreUnavailable) as exc:
        print(f"error: cannot use the receiver database: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
