"""Commissioning tools: find the meters on a line, read one once.

``register(subparsers)`` adds ``scan`` and ``read`` to the ``meter-gateway`` CLI.
Both run the real bus scheduler on the line (the same code the daemon polls
with) and take the line's lock first: while the daemon owns a line they refuse,
because two masters on one RS-485 line corrupt each other's frames.
"""

from __future__ import annotations

from gateway.commissioning.cli import register
from gateway.commissioning.scan import ScanResult, parse_ids, scan

__all__ = ["ScanResult", "parse_ids", "register", "scan"]
