-- The receiver's first schema, as files made before versioned migrations already hold it
-- (hence IF NOT EXISTS: such a file is at user_version 0 with these tables in place).
CREATE TABLE IF NOT EXISTS credits (
    gateway TEXT NOT NULL, meter TEXT NOT NULL, seq INTEGER NOT NULL,
    hash TEXT NOT NULL, wh INTEGER NOT NULL, start INTEGER NOT NULL,
    wire TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (gateway, meter, seq)
);
CREATE TABLE IF NOT EXISTS batches (
    gateway TEXT NOT NULL, batch_key TEXT NOT NULL, request_sha256 TEXT NOT NULL,
    response TEXT NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (gateway, batch_key)
);
-- The credits of one quarter-hour, to check that corrections add up.
CREATE INDEX IF NOT EXISTS credits_by_start ON credits (gateway, meter, start);
