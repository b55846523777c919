"""Live status shared by the daemon's tasks and shown by the web page.

Plain mutable dataclasses owned by the event loop thread: tasks update their
own entries, the web layer only reads. Nothing here is persisted; the ledger
is the durable record.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class MeterHealth(StrEnum):
    UNKNOWN = "unknown"
    """Not read yet since start."""
    ONLINE = "online"
    DEGRADED = "degraded"
    """The last read failed but not enough times in a row to call it offline."""
    OFFLINE = "offline"


OFFLINE_AFTER = 3
"""Consecutive failed reads before a meter is shown offline (and backed off)."""

LINE_HISTORY_BUCKET_S = 60
LINE_HISTORY_BUCKETS = 6 * 60
"""A line keeps per-minute transaction and error counts for the last six hours: long enough to see when
a bus degraded during a shift, small enough (360 buckets per line) to keep in memory."""


@dataclass(frozen=True, slots=True)
class LiveValue:
    """The latest value of one polled quantity, in the unit its profile scales it to (SI: W, V, A, Hz, Wh)."""

    value: float
    unit: str
    t: float
    """Wall time (Unix seconds) of the read it came from."""


ValueSink = Callable[[str, str, LiveValue], None]
"""Told of every new live value: (meter, quantity, value). Must not block: it runs inside a poll."""


@dataclass
class MeterStatus:
    meter: str
    source: str
    where: str
    profile: str = ""
    health: MeterHealth = MeterHealth.UNKNOWN
    last_read_t: float | None = None
    last_register_wh: int | None = None
    last_power_w: float | None = None
    last_voltage_v: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    reads_ok: int = 0
    reads_failed: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    clock_wrong: str | None = None
    """Set while the meter's own timestamps are refused as impossible (e.g. a meter booted without NTP
    stamps 1970): what its clock reads and why that cannot be. Cleared by its next plausible timestamp."""
    values: dict[str, LiveValue] = field(default_factory=dict)
    """The latest value of every quantity polled from this meter (Modbus: each poll; MQTT: the energy, and
    the power when the payload carries it). An energy register is only shown once its reading was accepted."""
    value_sink: ValueSink | None = field(default=None, repr=False, compare=False)
    """Set by the telemetry publisher: told of each new value (see :mod:`gateway.telemetry`)."""

    def set_value(self, name: str, value: float, unit: str, t: float) -> None:
        live = LiveValue(value, unit, t)
        self.values[name] = live
        if self.value_sink is not None:
            self.value_sink(self.meter, name, live)

    def read_ok(self, t: float) -> None:
        self.health = MeterHealth.ONLINE
        self.last_read_t = t
        self.consecutive_failures = 0
        self.last_error = None
        self.reads_ok += 1

    def read_failed(self, error: str) -> None:
        self.consecutive_failures += 1
        self.reads_failed += 1
        self.last_error = error
        self.health = MeterHealth.OFFLINE if self.consecutive_failures >= OFFLINE_AFTER else MeterHealth.DEGRADED


@dataclass
class LineStatus:
    """One serial line or TCP endpoint, as its bus scheduler sees it.

    Rates and utilisation cover the last ``window_s`` seconds (monotonic), so a
    technician sees the line as it is now, not averaged since boot.
    """

    name: str
    kind: str
    endpoint: str
    connected: bool = False
    transactions: int = 0
    errors: int = 0
    cycle_overruns: int = 0
    """Polls that ended after their next slot had begun (the line was stalled, or is overbooked)."""
    poll_period_s: float | None = None
    """The shortest poll period configured on the line."""
    achievable_period_s: float | None = None
    """The period the line gives those meters: the configured one while it keeps it, the one they
    actually get (every meter alike) while it is overloaded."""
    needed_period_s: float | None = None
    """The shortest period the meters' read plans allow on this wire (serial lines), as check-config says."""
    overloaded: bool = False
    """The configured periods do not fit the line: meters are polled round robin, as often as it can."""
    overloaded_since: float | None = None
    utilisation: float = 0.0
    """Fraction of wall time a transaction was in flight."""
    transactions_per_s: float = 0.0
    errors_per_s: float = 0.0
    last_cycle_s: float | None = None
    """From a poll slot to the end of the last poll due in it."""
    noise_bytes: int = 0
    """Unrequested bytes discarded (noise, late answers, a second master)."""
    last_error: str | None = None
    window_s: float = 60.0
    history: deque[list[int]] = field(default_factory=lambda: deque(maxlen=LINE_HISTORY_BUCKETS))
    """``[minute start (wall time, s), transactions, errors]`` per minute that saw a transaction, oldest
    first; minutes without any are absent (the line was idle or stopped)."""

    def record(self, t: float, ok: bool) -> None:
        """Count one transaction at wall time ``t`` in its minute; O(1), bounded."""
        minute = int(t // LINE_HISTORY_BUCKET_S) * LINE_HISTORY_BUCKET_S
        history = self.history
        # A wall clock stepped back lands in the newest bucket rather than reordering the history.
        if not history or minute > history[-1][0]:
            history.append([minute, 0, 0])
        bucket = history[-1]
        bucket[1] += 1
        if not ok:
            bucket[2] += 1


@dataclass
class QuarantinedPayload:
    t: float
    topic: str
    reason: str
    payload: bytes


@dataclass
class UplinkProgress:
    """How fast an uplink drains its backlog (for the status page's progress and ETA)."""

    delivered: int = 0
    """Credits delivered since the daemon started."""
    rate_per_s: float = 0.0
    """Smoothed delivery rate over recent batches."""
    last_delivery_mono: float | None = None

    def record(self, n: int, mono: float) -> None:
        if self.last_delivery_mono is not None and mono > self.last_delivery_mono:
            instant = n / (mono - self.last_delivery_mono)
            self.rate_per_s = instant if self.rate_per_s == 0 else 0.8 * self.rate_per_s + 0.2 * instant
        self.last_delivery_mono = mono
        self.delivered += n


@dataclass
class TelemetryStatus:
    """The MQTT telemetry publisher (gateway.telemetry): what it sent, dropped and failed, for the page and API."""

    broker: str
    connected: bool = False
    values_published: int = 0
    values_dropped: int = 0
    """Live values pushed out of the full queue while the broker was slow or away (the newest are kept)."""
    intervals_published: int = 0
    intervals_behind: int = 0
    """Closed intervals in the ledger not yet published (they wait there, nothing is lost)."""
    discovery_published: int = 0
    failures: int = 0
    """Connection attempts and publishes that failed."""
    last_error: str | None = None
    last_error_t: float | None = None


@dataclass
class StellarAccountStatus:
    """A meter's custodial Stellar account as the Stellar uplink last saw it."""

    meter: str
    state: str = "unknown"
    """waiting (no serial / no account yet), creating, active, failed."""
    serial: str | None = None
    account: str | None = None
    balance: str | None = None
    """On-chain balance of the utility's asset, as Horizon spells it (7 decimals)."""
    balance_t: float | None = None
    detail: str | None = None


@dataclass
class StellarStatus:
    """The Stellar uplink's live view, for the page and ``/api/v1/sync`` (the ledger holds the record)."""

    horizon_url: str
    gateway_account: str
    asset: str
    rate: str
    accounts: dict[str, StellarAccountStatus] = field(default_factory=dict)
    pending_tx: str | None = None
    latest_ledger: int | None = None
    xlm_balance: str | None = None
    asset_balance: str | None = None
    """What is left of the gateway's allowance."""
    waiting_for: str | None = None
    """The meter whose account the next credit waits for, if any."""
    payments: int = 0
    """Payments made since start."""


@dataclass
class GatewayStatus:
    gateway_id: str
    public_key: str
    started_t: float
    meters: dict[str, MeterStatus] = field(default_factory=dict)
    readings_committed: int = 0
    credits_created: int = 0
    commit_errors: int = 0
    mqtt_connected: bool | None = None
    quarantine: deque[QuarantinedPayload] = field(default_factory=lambda: deque(maxlen=100))
    """Last rejected MQTT payloads, raw, for a technician to look at (bounded)."""
    payloads_rejected: Counter[str] = field(default_factory=Counter)
    uplinks: dict[str, UplinkProgress] = field(default_factory=dict)
    time_trusted: bool | None = None
    time_trust_reason: str = ""
    readings_held: int = 0
    """Readings waiting for trusted time before they are placed in intervals."""
    readings_dropped_untrusted: int = 0
    alarms: dict[str, str] = field(default_factory=dict)
    """Active alarms by name (e.g. disk_low), with a sentence for the technician."""
    lines: dict[str, LineStatus] = field(default_factory=dict)
    """Per Modbus line / endpoint, by bus name."""
    telemetry: TelemetryStatus | None = None
    """Set while MQTT telemetry is configured."""
    stellar: StellarStatus | None = None
    """Set when [stellar] is configured."""
