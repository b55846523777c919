-- Energy channels: each (gateway, meter, channel) is a chain of its own (credit encoding v2 signs the
-- channel; a v1 credit is import). The key gains the channel, so the table is rebuilt; every credit
-- stored before is import.
CREATE TABLE credits_0003 (
    gateway TEXT NOT NULL, meter TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export')),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL, wh INTEGER NOT NULL, start INTEGER NOT NULL,
    wire TEXT NOT NULL, received_ms INTEGER NOT NULL,
    kind TEXT NOT NULL DEFAULT 'interval',
    PRIMARY KEY (gateway, meter, channel, seq)
);
INSERT INTO credits_0003 (gateway, meter, channel, seq, hash, wh, start, wire, received_ms, kind)
    SELECT gateway, meter, 'import', seq, hash, wh, start, wire, received_ms, kind FROM credits;
DROP TABLE credits;
ALTER TABLE credits_0003 RENAME TO credits;
-- The credits of one quarter-hour of one channel, to check that its corrections add up.
CREATE INDEX credits_by_start ON credits (gateway, meter, channel, start);
