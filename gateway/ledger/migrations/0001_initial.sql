-- Schema version 1: the ledger of one gateway.

-- Engine state and credit chain tip per meter; written in the same
-- transaction as the intervals and credits it produced.
CREATE TABLE meters (
    meter           TEXT PRIMARY KEY,
    last_t_ms       INTEGER,
    last_wh         INTEGER,
    anchor_s        INTEGER,
    anchor_wh       INTEGER,
    anchor_quality  TEXT NOT NULL DEFAULT 'A',
    last_seq        INTEGER NOT NULL DEFAULT 0,
    last_hash       TEXT NOT NULL
);

-- Raw readings, kept for a bounded time (energy lives in the register).
CREATE TABLE readings (
    meter        TEXT NOT NULL,
    t_ms         INTEGER NOT NULL,
    register_wh  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    disposition  TEXT NOT NULL
);
-- Time-major: new readings append to the end of the index, so a commit dirties
-- one index page instead of one per meter (the SD card's write volume).
CREATE INDEX readings_by_time ON readings (t_ms, meter);

CREATE TABLE intervals (
    meter              TEXT NOT NULL,
    start              INTEGER NOT NULL,
    "end"              INTEGER NOT NULL,
    wh                 INTEGER NOT NULL CHECK (wh >= 0),
    quality            TEXT NOT NULL,
    register_start_wh  INTEGER NOT NULL,
    register_end_wh    INTEGER NOT NULL,
    credit_seq         INTEGER NOT NULL,
    PRIMARY KEY (meter, start)
) WITHOUT ROWID;

-- The outbox. Rows are immutable once written; id only grows (AUTOINCREMENT
-- never reuses an id), so an uplink's progress is one integer cursor.
CREATE TABLE credits (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    start       INTEGER NOT NULL,
    wh          INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    wire        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (meter, seq)
);

-- Per-uplink delivery state: everything with id <= delivered_id is settled
-- (delivered, or dead-lettered in uplink_batches).
CREATE TABLE uplink_cursor (
    uplink           TEXT PRIMARY KEY,
    delivered_id     INTEGER NOT NULL DEFAULT 0,
    last_success_ms  INTEGER,
    last_error       TEXT,
    last_error_ms    INTEGER
);

-- A batch is written here before it is first sent, so a restart resends
-- exactly the same credits under the same idempotency key.
CREATE TABLE uplink_batches (
    uplink      TEXT NOT NULL,
    batch_key   TEXT NOT NULL,
    first_id    INTEGER NOT NULL,
    last_id     INTEGER NOT NULL,
    n_credits   INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('inflight', 'delivered', 'dead')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_ms  INTEGER NOT NULL,
    settled_ms  INTEGER,
    detail      TEXT,
    PRIMARY KEY (uplink, batch_key)
);
CREATE INDEX uplink_batches_open ON uplink_batches (uplink, state);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    t_ms    INTEGER NOT NULL,
    meter   TEXT,
    kind    TEXT NOT NULL,
    detail  TEXT
);
