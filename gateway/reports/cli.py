"""``meter-gateway bill`` and ``meter-gateway export {nem12,greenbutton}``.

Both read the ledger read-only (``ReadOnlyLedger``), so they are safe to run while the daemon is
writing. Dates are local calendar dates in the site zone and ``--to`` is *exclusive* — the first day
not included — because that is how ``BillingPeriod`` and a meter read date work: December 2025 is
``--from 2025-12-01 --to 2026-01-01``. The period actually used is printed with the result, so an
off-by-one shows immediately.

Files are written next to their destination and renamed into place, so a reader (or a transfer job
watching the directory) never sees half an export.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar

from gateway.billing.money import fraction_to_str
from gateway.config import GatewayConfig, load_config
from gateway.errors import GatewayError
from gateway.reports import bills_cli
from gateway.reports.bills_cli import amount_lines, energy_lines
from gateway.reports.service import (
    MeterBill,
    ReportConfigError,
    greenbutton_export,
    local_range,
    meter_bill,
    nem12_export,
    site_period,
)
from gateway.reports.source import IntervalSource, ReadOnlyLedger

T = TypeVar("T")


class ReportOutputError(GatewayError):
    """The report was made but could not be written where asked (exit code 1, not a usage error)."""

_BILL_USAGE = ("meter-gateway bill METER --config FILE --from DATE --to DATE [--issue [--replaces NUMBER]] [--json]\n"
               "       meter-gateway bill list METER --config FILE [--json]\n"
               "       meter-gateway bill show NUMBER --config FILE [--json]")
_TO_HELP = ("last read date, EXCLUSIVE: the first local day not included (December 2025 is "
            "--from 2025-12-01 --to 2026-01-01)")
_DATES = ("Dates are local days in the site time zone; --from is included, --to is not (December 2025 is "
          "--from 2025-12-01 --to 2026-01-01), as for a billing period between two meter reads.")


def _local_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date; write YYYY-MM-DD") from None


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="FILE",
                   help="the gateway's TOML config (data_dir, tariffs, NMIs, site_timezone)")
    p.add_argument("--from", dest="start", required=True, type=_local_date, metavar="DATE",
                   help="first local day included (YYYY-MM-DD, site time zone)")
    p.add_argument("--to", dest="end", required=True, type=_local_date, metavar="DATE", help=_TO_HELP)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bill`` and ``export`` to the ``meter-gateway`` command line."""
    p = subparsers.add_parser(
        "bill", help="a meter's bill for a period (--issue: store it numbered); list and show issued bills",
        usage=_BILL_USAGE,
        description="Price a meter's stored 15-minute intervals under its configured tariff; with --issue, store "
        "it as the meter's next numbered bill (billing an issued period again replaces that bill, nothing is "
        "overwritten). 'bill list METER' lists a meter's issued bills, 'bill show NUMBER' prints one and "
        "verifies it. " + _DATES)
    p.add_argument("meter", metavar="METER", help="meter id from the config, or 'list' / 'show'")
    p.add_argument("name", nargs="?", metavar="METER|NUMBER", help="after 'list': a meter id; after 'show': a number")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="the gateway's TOML config (data_dir, tariffs, NMIs, site_timezone)")
    p.add_argument("--from", dest="start", type=_local_date, metavar="DATE",
                   help="first local day included (YYYY-MM-DD, site time zone)")
    p.add_argument("--to", dest="end", type=_local_date, metavar="DATE", help=_TO_HELP)
    p.add_argument("--issue", action="store_true",
                   help="store the bill with the meter's next number (by the daemon while it runs)")
    p.add_argument("--replaces", metavar="NUMBER",
                   help="with --issue: the issued bill this one takes the place of, when its period differs")
    p.add_argument("--json", action="store_true", help="print as JSON (amounts in minor units)")
    p.set_defaults(func=cmd_bill)

    export = subparsers.add_parser("export", help="write stored intervals as NEM12 or Green Button")
    formats = export.add_subparsers(dest="export_format", required=True, metavar="FORMAT")
    for name, helptext in (("nem12", "AEMO NEM12 (CSV, 15-minute kWh, one NMI per meter from the config)"),
                           ("greenbutton", "Green Button / ESPI Atom XML (Wh per 15 minutes)")):
        p = formats.add_parser(name, help=helptext, description=f"{helptext}. {_DATES}")
        _add_range(p)
        p.add_argument("--meter", action="append", metavar="ID",
                       help="meter to include (repeatable); default: every meter"
                            + (" with an NMI" if name == "nem12" else ""))
        p.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")
        p.set_defaults(func=cmd_export)


async def _with_ledger(cfg: GatewayConfig, work: Callable[[IntervalSource], Awaitable[T]]) -> T:
    async with await ReadOnlyLedger.open(cfg.data_dir) as ledger:
        return await work(ledger)


class BillUsage(ReportConfigError):
    """``bill`` was given arguments that do not make one of its forms (exit code 2)."""


def cmd_bill(args: argparse.Namespace) -> int:
    if args.name is not None:
        if args.meter not in ("list", "show"):
            raise BillUsage(f"unexpected {args.name!r} after the meter id; usage:\n{_BILL_USAGE}")
        if args.start or args.end or args.issue or args.replaces:
            raise BillUsage(f"'bill {args.meter}' takes no --from, --to, --issue or --replaces")
        return bills_cli.cmd_list(args) if args.meter == "list" else bills_cli.cmd_show(args)
    if args.start is None or args.end is None:
        raise BillUsage(f"billing a meter needs --from and --to; usage:\n{_BILL_USAGE}")
    if args.replaces and not args.issue:
        raise BillUsage("--replaces only goes with --issue")
    cfg = load_config(args.config)
    period = site_period(cfg, args.start, args.end)
    if args.issue:
        return bills_cli.cmd_issue(args, cfg, period)
    result = asyncio.run(_with_ledger(cfg, lambda src: meter_bill(src, cfg, args.meter, period)))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render_bill(result))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    start, end = local_range(cfg, args.start, args.end)
    created = datetime.now(UTC)
    data: bytes
    if args.export_format == "nem12":
        text = asyncio.run(_with_ledger(cfg, lambda src: nem12_export(src, cfg, args.meter, start, end,
                                                                      created=created)))
        data = text.encode("utf-8")
    else:
        data = asyncio.run(_with_ledger(cfg, lambda src: greenbutton_export(src, cfg, args.meter, start, end,
                                                                            created=created)))
    if args.output:
        try:
            write_atomically(Path(args.output), data)
        except OSError as exc:
            raise ReportOutputError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the path holds either the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def render_bill(result: MeterBill) -> str:
    """The bill as a customer would read it, with the data it rests on underneath."""
    bill = result.bill
    period = bill.period
    last_day = date.fromordinal(period.end.toordinal() - 1)
    cycle = "full billing cycle" if period.is_full_cycle else f"prorated {fraction_to_str(bill.proration)}"
    data = result.data
    qualities = ", ".join(f"{q} {n}" for q, n in sorted(data.qualities.items())) or "none"
    doc = bill.to_dict()
    lines = [
        f"Meter {result.meter} — tariff {bill.tariff_name}",
        f"Period {period.start} to {last_day} inclusive ({bill.days} days, {period.tz}), {cycle}",
        *energy_lines(doc),
        "",
        *amount_lines(doc),
        "",
        f"Data: {data.present} of {data.expected} intervals ({data.coverage:.1%}); qualities: {qualities}",
    ]
    exported = result.export_data
    if exported is not None:
        lines.append(f"Export data: {exported.present} of {exported.expected} intervals ({exported.coverage:.1%})")
    return "\n".join(lines)
