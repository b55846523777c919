-- Schema version 5: the Stellar uplink (issue 8).
--
-- Its delivery state is a cursor and batches like any uplink's: rows with uplink = 'stellar' in
-- uplink_cursor and uplink_batches (apart from the billing API's, so either can be down without
-- holding the other), which also makes the ingest's "sent horizon" count a credit as sent from the
-- moment its payment is being built. What only Stellar needs lives here.

-- One custodial account per meter, tied to the meter's serial number. The row (with the account
-- id and the creating transaction) is written before that transaction is first submitted.
CREATE TABLE stellar_accounts (
    meter       TEXT PRIMARY KEY,
    serial      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('creating', 'active', 'failed')),
    tx_hash     TEXT,
    created_ms  INTEGER NOT NULL,
    active_ms   INTEGER,
    detail      TEXT
);

-- Every envelope the gateway signs, stored before its first submit: hash, the exact bytes, its
-- sequence number and upper bounds. 'pending' may still be (or become) included and is resent
-- byte for byte; 'applied' / 'failed' are in the network's history (fee charged); 'void' is proved
-- never to be included (its bound passed, or its sequence number was used) and may be rebuilt.
CREATE TABLE stellar_txs (
    hash        TEXT PRIMARY KEY,
    purpose     TEXT NOT NULL CHECK (purpose IN ('credit', 'account')),
    ref         TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    max_ledger  INTEGER NOT NULL,
    max_time    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'failed', 'void')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    created_ms  INTEGER NOT NULL,
    settled_ms  INTEGER
);
CREATE INDEX stellar_txs_by_state ON stellar_txs (state, created_ms);
CREATE INDEX stellar_txs_by_ref ON stellar_txs (ref);

-- What the uplink last ran against (Horizon URL, network, asset, rate), so `meter-gateway stellar
-- accounts --data-dir` can show balances without the config file.
CREATE TABLE stellar_meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
