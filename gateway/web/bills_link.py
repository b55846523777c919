"""The meter page's list of issued bills, from ``gateway.reports.bills`` when that module is installed.

Numbered bills (storage, ``bill --issue``, the printable ``/bills/{number}``) are built beside the page;
until they are part of the same tree the page shows no list instead of failing. Each summary is
expected to have ``number, period_from, period_to, total, issued_at, replaces``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from importlib import resources
from typing import Any

from gateway.ledger.store import Ledger
from gateway.web.headers import style_hash

BILL_TEMPLATE = "bill.html"


def style_sources() -> list[str]:
    """CSP sources for the bill page's inline style (the app adds them to its ``style-src``).

    Read as package data, not through jinja2: the daemon loads jinja2 at the first page view only; and here,
    not in :mod:`gateway.web.bills`, whose routes load at their first request (:mod:`gateway.web.deferred`)."""
    source = resources.files("gateway.web").joinpath(f"templates/{BILL_TEMPLATE}").read_text(encoding="utf-8")
    return [style_hash(source)]

BILLS_MODULE = "gateway.reports.bills"


async def issued_bills(ledger: Ledger, meter: str) -> Sequence[Any] | None:
    """The meter's issued bills, newest first; None when numbered bills are not available."""
    try:
        module = importlib.import_module(BILLS_MODULE)
    except ModuleNotFoundError:
        return None
    found = module.list_bills(ledger, meter)
    if inspect.isawaitable(found):
        found = await found
    return sorted(found, key=lambda b: str(b.number), reverse=True)
