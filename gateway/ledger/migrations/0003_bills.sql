-- Numbered bills with history (gateway/reports/bills.py), and the telemetry publisher's cursor.

-- One row per issued bill, never changed or deleted (the triggers below). The bill as issued is
-- `document`: canonical JSON with its line items, the tariff as used, totals, the period, the
-- digest and quality counts of the intervals it rests on (which stay in `intervals`), signed
-- with the gateway's key. The other columns repeat what lists and lookups need.
-- Numbering: per meter, gap-free, in issue order; the month of the period is in the number for
-- people, the sequence makes it unique (`BILL-202512-flat-1-0001`).
CREATE TABLE bills (
    number            TEXT PRIMARY KEY,
    meter             TEXT NOT NULL,
    seq               INTEGER NOT NULL CHECK (seq >= 1),
    month             TEXT NOT NULL CHECK (length(month) = 6 AND month NOT GLOB '*[^0-9]*'),
    period_from       TEXT NOT NULL,  -- first local day billed (YYYY-MM-DD, site zone)
    period_to         TEXT NOT NULL,  -- first local day NOT billed
    issued_ms         INTEGER NOT NULL,
    replaces          TEXT,           -- the number of the bill this one replaces (a re-bill)
    currency          TEXT NOT NULL,
    minor_units       INTEGER NOT NULL,
    total_minor       INTEGER NOT NULL,
    intervals         INTEGER NOT NULL,
    intervals_sha256  TEXT NOT NULL,
    document          TEXT NOT NULL,
    document_sha256   TEXT NOT NULL,
    signature         TEXT NOT NULL,
    UNIQUE (meter, seq),
    CHECK (number = printf('BILL-%s-%s-%04d', month, meter, seq)),
    CHECK (period_from < period_to)
);
-- A bill is replaced at most once: re-billing again replaces the newest bill of the chain.
CREATE UNIQUE INDEX bills_replaced_once ON bills (replaces) WHERE replaces IS NOT NULL;
CREATE INDEX bills_by_meter_period ON bills (meter, period_from);

CREATE TRIGGER bills_gap_free BEFORE INSERT ON bills
WHEN NEW.seq != (SELECT COALESCE(MAX(seq), 0) + 1 FROM bills WHERE meter = NEW.meter)
BEGIN
    SELECT RAISE(ABORT, 'bill numbers are gap-free per meter: this is not the meter''s next number');
END;

CREATE TRIGGER bills_replace_own BEFORE INSERT ON bills
WHEN NEW.replaces IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM bills WHERE number = NEW.replaces AND meter = NEW.meter)
BEGIN
    SELECT RAISE(ABORT, 'a bill can only replace an issued bill of the same meter');
END;

CREATE TRIGGER bills_never_updated BEFORE UPDATE ON bills
BEGIN
    SELECT RAISE(ABORT, 'issued bills are immutable: issue a new bill that replaces it');
END;

CREATE TRIGGER bills_never_deleted BEFORE DELETE ON bills
BEGIN
    SELECT RAISE(ABORT, 'issued bills are never deleted: issue a new bill that replaces it');
END;

-- How far each telemetry sink has published the outbox (credits.id), so closed intervals are
-- taken from the ledger in order and a broker outage delays them but loses none. Kept apart from
-- uplink_cursor on purpose: telemetry is not billing, and a credit it has published may still be
-- revised in place (only what the billing uplinks have taken is final).
CREATE TABLE telemetry_cursor (
    sink             TEXT PRIMARY KEY,
    published_id     INTEGER NOT NULL DEFAULT 0,
    updated_ms       INTEGER
);
