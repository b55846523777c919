"""``meter-gateway status``: the status page in the terminal, from the running gateway's local API.

It asks the daemon (it never opens the ledger or a line itself) with the box's
web token, which only the gateway's user (or root) can read: over SSH on the
box, ``sudo -u meter-gateway meter-gateway status`` shows what the page shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, GatewayError

DEFAULT_CONFIG = "/etc/meter-gateway/gateway.toml"
API_TIMEOUT_S = 5.0
"""The local API answers in milliseconds; a gateway that takes longer is stuck, which is itself the answer."""


class StatusUnavailable(GatewayError):
    """The local API could not be asked (daemon not running, wrong port, token refused)."""


def _token(path: Path) -> str:
    try:
        token = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        raise StatusUnavailable(f"no web token at {path}: has the gateway ever started with this config? "
                                "(it creates the token at first start)") from None
    except PermissionError:
        raise StatusUnavailable(f"cannot read {path}: run as the gateway's user, e.g. "
                                "'sudo -u meter-gateway meter-gateway status'") from None
    if not token:
        raise StatusUnavailable(f"{path} is empty; restart the gateway to create a new token")
    return token


def _where(args: argparse.Namespace) -> tuple[str, Path]:
    """(base URL, token file) from the flags, else from the config's [web] and data_dir."""
    from gateway.config import load_config
    from gateway.web.auth import TOKEN_FILE

    if args.url and args.token_file:
        return args.url.rstrip("/"), Path(args.token_file)
    cfg = load_config(args.config)
    if not cfg.web.enabled:
        raise ConfigError(f"{args.config}: [web] enabled = false, so there is no local API to ask")
    host = cfg.web.listen if cfg.web.listen not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    url = (args.url or f"http://{host}:{cfg.web.port}").rstrip("/")
    return url, Path(args.token_file) if args.token_file else cfg.data_dir / TOKEN_FILE


def fetch(url: str, token: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    import httpx

    docs: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=API_TIMEOUT_S) as client:
            for path in ("/api/v1/meters", "/api/v1/lines", "/api/v1/sync"):
                response = client.get(path)
                if response.status_code in (401, 403):
                    raise StatusUnavailable(f"{url} refused the token: is this the config the running gateway "
                                            "uses? (the token is in its data_dir)")
                response.raise_for_status()
                docs.append(response.json())
    except httpx.HTTPStatusError as exc:
        raise StatusUnavailable(f"{url}{exc.request.url.path} answered {exc.response.status_code}") from None
    except httpx.TransportError as exc:
        raise StatusUnavailable(f"cannot reach the gateway at {url} ({exc}): is it running? "
                                "'systemctl status meter-gateway'") from None
    return docs[0], docs[1], docs[2]


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.terminal.render import render

    url, token_file = _where(args)
    meters, lines, sync = fetch(url, _token(token_file))
    print(f"gateway at {url}")
    for line in render(meters, lines, sync):
        print(line)
    return 0


def register(subparsers: Any) -> None:
    """Add ``status`` to the meter-gateway subcommands (an argparse subparsers object)."""
    p = subparsers.add_parser("status", help="show the status page in the terminal (asks the running gateway)")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"the gateway's config (default {DEFAULT_CONFIG})")
    p.add_argument("--url", help="the gateway's local API, e.g. http://127.0.0.1:8080 (default: from the config)")
    p.add_argument("--token-file", help="its web token (default: web.token in the config's data_dir)")
    p.set_defaults(func=cmd_status)
