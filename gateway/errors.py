"""One exception tree for the whole gateway.

Callers decide what to do by the class they catch, not by parsing messages:

    GatewayError
    ├── ConfigError            installer must fix the config file (exit code 2)
    ├── ProfileError           a firmware profile file is invalid or unknown
    ├── LedgerError            the SQLite ledger cannot be opened, migrated or written
    │   ├── LedgerStorageError     the disk failed a write (I/O error, read-only); retry later
    │   │   └── LedgerDiskFull         no space left: free space (raw readings are pruned first)
    │   ├── LedgerIntegrityError   the database file is damaged; move it aside and recover
    │   └── LedgerMissing          the key has issued credits but its ledger is gone: recover first
    ├── AcquisitionError       reading a meter failed (retryable per device)
    │   ├── DeviceTimeout          no answer within the bus timeout
    │   ├── DeviceException        the device answered with a Modbus exception code
    │   └── ValueRejected          decoded value failed a validity/plausibility check
    ├── PayloadError           an MQTT payload could not be mapped to a reading
    └── UplinkError            delivering to a sink failed
        ├── UplinkRetryable        try the same batch again later
        └── UplinkRejected         the sink refused the batch; dead-letter it

Messages are written for the person who has to act on them: they say what was
wrong and, where there is one, what to do about it.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used as written."""


class ProfileError(GatewayError):
    """A firmware profile is unknown or its data file is invalid."""


class LedgerError(GatewayError):
    """The ledger could not complete a durable operation."""


class LedgerStorageError(LedgerError):
    """The storage under the ledger failed (I/O error, read-only, busy): not the data's fault.

    The same write may succeed later; the ledger in memory and on disk still agree.
    """


class LedgerDiskFull(LedgerStorageError):
    """No space left on the file system that holds the ledger."""


class LedgerIntegrityError(LedgerError):
    """SQLite reports the database file as damaged."""

    def __init__(self, message: str, finding: str | None = None) -> None:
        super().__init__(message)
        self.finding = finding or message
        """What was found, without the advice (kept next to the ledger for the next start)."""


class LedgerMissing(LedgerError):
    """This gateway's key has issued credits from a ledger that is no longer there.

    Starting a new ledger would restart every meter's chain at seq 1, which the billing
    system refuses as replays; the gateway refuses to start until the chains are recovered.
    """


class AcquisitionError(GatewayError):
    """A read from a meter failed; the device may recover on its own."""


class DeviceTimeout(AcquisitionError):
    """The device did not answer in time."""


class DeviceException(AcquisitionError):
    """The device answered with a Modbus exception response."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ValueRejected(AcquisitionError):
    """A decoded value is invalid (sentinel, NaN) or implausible."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class PayloadError(GatewayError):
    """An MQTT payload is malformed, oversized or of the wrong type."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class UplinkError(GatewayError):
    """Delivery to a sink failed."""


class UplinkRetryable(UplinkError):
    """A transient failure: resend the same batch after a backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UplinkRejected(UplinkError):
    """The sink refused the batch for good (4xx): keep it, but stop retrying it."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
