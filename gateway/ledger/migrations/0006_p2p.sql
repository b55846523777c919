-- P2P energy sharing (issue 9, seed 001): delivery records and the Soroban transactions that carry them.
--
-- A delivery record is decided and written in one write transaction (gateway.p2p.store): at most one
-- per agreement (UNIQUE agreement_id), immutable once written apart from its delivery state. id only
-- grows: it is the order records are sent in, and a provider meter's newest record (highest id) holds
-- the Wh remainder (carry_out_wh) and the point (covered_until) its next agreement starts from.
CREATE TABLE p2p_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    agreement_id    INTEGER NOT NULL UNIQUE,
    provider_meter  TEXT NOT NULL,
    provider        TEXT NOT NULL,
    kwh             INTEGER NOT NULL CHECK (kwh >= 0),
    meter_reading   INTEGER NOT NULL,
    carry_out_wh    INTEGER NOT NULL CHECK (carry_out_wh >= 0),
    covered_until   INTEGER NOT NULL,
    body            TEXT NOT NULL,
    hash            TEXT NOT NULL,
    signature       TEXT NOT NULL,
    -- pending: to be sent; delivered: the contract recorded it (contract_tx_id); dead: the contract
    -- refused it (detail starts with the contract's error name); nothing: 0 kWh, never sent.
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'nothing')),
    decided_ms      INTEGER NOT NULL,
    contract_tx_id  INTEGER,
    tx_hash         TEXT,
    error_name      TEXT,
    detail          TEXT,
    settled_ms      INTEGER
);
CREATE INDEX p2p_deliveries_by_meter ON p2p_deliveries (provider_meter, id);
CREATE INDEX p2p_deliveries_open ON p2p_deliveries (state, id);

-- Every deliver_energy envelope, stored (hash and exact bytes) before its first send; resent byte for
-- byte while 'pending'. 'applied' / 'failed' are in the network's history (failed: fee charged, the
-- contract unchanged); 'void' is proved never to be included (its sequence number was used by another
-- transaction, or its time bound passed unseen) and its record may get a new envelope.
CREATE TABLE p2p_txs (
    hash          TEXT PRIMARY KEY,
    agreement_id  INTEGER NOT NULL,
    envelope      TEXT NOT NULL,
    seq           INTEGER NOT NULL,
    max_time      INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'applied', 'failed', 'void')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    result        TEXT,
    created_ms    INTEGER NOT NULL,
    settled_ms    INTEGER
);
CREATE INDEX p2p_txs_by_state ON p2p_txs (state, created_ms);
CREATE INDEX p2p_txs_by_agreement ON p2p_txs (agreement_id);
