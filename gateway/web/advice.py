"""Read errors and rejections in words an installer acts on. Pure.

The acquisition layer's messages are precise but technical ("unit 3 answered exception 2 to a read
of 2 registers at 0x0156", "cannot open /dev/ttyUSB0: [Errno 2] ..."). The page shows what they
mean and what to check first; the original text stays one tap away for the expert.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Advice:
    summary: str
    """What is wrong, in one sentence."""
    action: str
    """What to check or do first."""
    detail: str
    """The original message."""


RS485_CHECKS = ("Check, in this order: the meter has power; the unit id in the config is the one on the meter's "
                "display; the RS-485 wires A and B (D+ and D−) are not swapped; baud rate and parity in the "
                "config match the meter's settings; the line is terminated (120 Ω) at both ends.")

MODBUS_EXCEPTIONS: dict[int, tuple[str, str]] = {
    1: ("unit {unit} does not support this kind of read (Modbus exception 1, illegal function)",
        "The firmware profile probably does not match this meter: compare the model on its nameplate with "
        "the profile in the config (meter-gateway profiles list)."),
    2: ("unit {unit} has no register at the address read (Modbus exception 2, illegal data address)",
        "The firmware profile does not match this model or firmware version: check the nameplate, then try "
        "'meter-gateway read' with the profile you think fits."),
    3: ("unit {unit} refused the read as asked (Modbus exception 3, illegal data value)",
        "The profile reads more registers at once than this meter allows: check the profile matches the model."),
    4: ("the device at unit {unit} reports an internal failure (Modbus exception 4)",
        "Many converters answer this for a unit id with no meter behind it: check the unit id on the meter's "
        "display and the wiring to it. If the id is right, power-cycle the meter."),
    5: ("unit {unit} is still working on an earlier request (Modbus exception 5)",
        "This usually clears by itself; if it stays, poll the meter less often (poll_s)."),
    6: ("unit {unit} is busy (Modbus exception 6)",
        "This usually clears by itself; if it stays, poll the meter less often (poll_s)."),
}


def _connect(m: re.Match[str]) -> tuple[str, str]:
    where, why = m.group(1), (m.group(2) or "").lower()
    if "refused" in why or "errno 111" in why or "connect call failed" in why:
        return (f"nothing accepts connections at {where}",
                "Check that the Modbus TCP converter or meter at that address is powered, that host and port in "
                "the config are right (502 is usual), and that no other program holds its only connection.")
    if any(w in why for w in ("unreachable", "no route", "timed out", "timeout")) or not why:
        return (f"{where} does not answer on the network",
                "Check its network cable and power, and that its IP address is the one in the config "
                "(ping it from the box).")
    if "name" in why or "resolution" in why:
        return (f"the name in {where} cannot be resolved", "Use the converter's IP address in the config.")
    return (f"the gateway cannot connect to {where}", "Check the converter's power, cable and address.")


def _open(m: re.Match[str]) -> tuple[str, str]:
    device, why = m.group(1), m.group(2).lower()
    if "no such file" in why or "errno 2" in why:
        return (f"the serial adapter {device} is not there",
                "Plug in the USB–RS485 adapter, or correct 'device' in the config; names under "
                "/dev/serial/by-id/ stay the same across reboots, /dev/ttyUSB0 may not.")
    if "permission" in why or "errno 13" in why:
        return (f"the gateway may not open {device}",
                "Add the gateway's user to the dialout group (usermod -aG dialout meter-gateway) and restart it.")
    if "busy" in why or "errno 16" in why:
        return (f"another program holds {device}",
                "Stop it (a scan or read, ModemManager, another gateway): an RS-485 line has one master.")
    return (f"the serial adapter {device} cannot be opened", "Unplug and re-plug the adapter; check 'device'.")


def _exception(m: re.Match[str]) -> tuple[str, str]:
    unit, code = m.group(1), int(m.group(2))
    summary, action = MODBUS_EXCEPTIONS.get(code, (
        f"unit {{unit}} answered with Modbus exception {code}", "Check the profile matches the meter model."))
    return summary.format(unit=unit), action


_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, str]]]] = [
    (re.compile(r"cannot connect to (\S+?)(?::\s+(.*))?$", re.S), _connect),
    (re.compile(r"cannot open (\S+?):\s*(.*)$", re.S), _open),
    (re.compile(r"(\S+) is in use"), lambda m: (
        f"another program holds {m.group(1)}",
        "Stop it (a scan or read, another gateway): an RS-485 line has one master.")),
    (re.compile(r"unit (\d+) answered exception (\d+)"), _exception),
    (re.compile(r"gateway (\S+) reports no answer from unit (\d+)"), lambda m: (
        f"the converter at {m.group(1)} got no answer from unit {m.group(2)} on its RS-485 side", RS485_CHECKS)),
    (re.compile(r"no (?:valid )?answer from unit (\d+) on (\S+?)(?::\s|$)"), lambda m: (
        f"unit {m.group(1)} does not answer on {m.group(2)}", RS485_CHECKS)),
    (re.compile(r"CRC error in a \d+-byte response from unit (\d+)"), lambda m: (
        f"answers from unit {m.group(1)} arrive damaged (CRC error)",
        "Noise or wiring on the RS-485 line: twisted pair, shield grounded at one end, 120 Ω at both ends, "
        "away from mains cables; and baud rate and parity as set on the meter.")),
    (re.compile(r"response from unit (\d+) while waiting for unit (\d+)"), lambda m: (
        f"unit {m.group(1)} answered when unit {m.group(2)} was asked",
        "Two meters may share one unit id, or a second master is on the line: give every meter its own id "
        "(meter-gateway scan lists them).")),
    (re.compile(r"truncated answer from unit (\d+)|unit (\d+) returned \d+ (?:registers|data bytes) for"), lambda m: (
        f"answers from unit {m.group(1) or m.group(2)} arrive incomplete",
        "Noise on the line, or a timeout too short for this meter: check the wiring, then raise timeout_s.")),
    (re.compile(r"connection to the device server is closed|connection (?:was )?(?:reset|lost|closed)", re.I),
     lambda m: ("the converter closed the connection",
                "It may allow one client only, or restarted: check that no other program connects to it.")),
    (re.compile(r"timed? ?out", re.I), lambda m: ("the meter did not answer in time", RS485_CHECKS)),
]

REJECTIONS: dict[str, str] = {
    "backwards": "the register went backwards (a reset, a replaced meter, or a misread)",
    "jump": "the register jumped further than the meter's maximum power allows",
    "wire_cost": "the register moved more than the line could have carried",
    "slow_read": "a read took too long to know when it was taken",
    "no_energy": "the profile has no readable energy register",
    "sentinel": "the meter sent its 'no value' marker",
    "nan": "the meter sent a value that is not a number",
    "length": "the answer had the wrong length",
    "meter_clock_ahead": "the meter's clock is ahead",
    "meter_clock_behind": "the meter's clock is behind",
    "late": "a reading arrived after its interval had been closed",
    "out_of_order": "a reading arrived older than one already used",
    "ledger_refused": "the ledger refused the reading",
    "malformed": "the MQTT message could not be read",
    "empty": "the MQTT message was empty",
}


def explain(error: str | None) -> Advice | None:
    """What a meter's or line's last error means and what to do; None without an error."""
    if not error:
        return None
    for pattern, make in _RULES:
        match = pattern.search(error)
        if match:
            summary, action = make(match)
            return Advice(summary[0].upper() + summary[1:] + ".", action, error)
    return Advice("The last read failed.", "The technical detail below says how; 'meter-gateway read' shows the "
                  "meter's answers one by one.", error)


def rejection(reason: str) -> str:
    return REJECTIONS.get(reason, reason.replace("_", " "))
