-- Schema version 5 (file 0005): energy channels (issue 9). A meter has an import channel and, when
-- its profile maps an export register, an export channel; each is a series of its own: readings,
-- engine state, intervals, and credits with their own sequence and hash chain per (meter, channel).
-- Everything an older version wrote is import.

-- Readings: a column only (no rewrite of the biggest table, no new index: a late reading's
-- neighbours are found through readings_by_time as before, and filtered by channel there).
ALTER TABLE readings ADD COLUMN channel TEXT NOT NULL DEFAULT 'import';

-- Engine state and chain tip: one row per (meter, channel).
CREATE TABLE meters_0005 (
    meter               TEXT NOT NULL,
    channel             TEXT NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export')),
    last_t_ms           INTEGER,
    last_wh             INTEGER,
    anchor_s            INTEGER,
    anchor_wh           INTEGER,
    anchor_quality      TEXT NOT NULL DEFAULT 'A',
    last_seq            INTEGER NOT NULL DEFAULT 0,
    last_hash           TEXT NOT NULL,
    register_offset_wh  INTEGER NOT NULL DEFAULT 0,
    last_raw_wh         INTEGER,
    pending             TEXT NOT NULL DEFAULT '[]',
    anchor_grade        TEXT NOT NULL DEFAULT 'A',
    PRIMARY KEY (meter, channel)
);
INSERT INTO meters_0005 (meter, channel, last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq,
                         last_hash, register_offset_wh, last_raw_wh, pending, anchor_grade)
    SELECT meter, 'import', last_t_ms, last_wh, anchor_s, anchor_wh, anchor_quality, last_seq, last_hash,
           register_offset_wh, last_raw_wh, pending, anchor_grade FROM meters;
DROP TABLE meters;
ALTER TABLE meters_0005 RENAME TO meters;

-- Intervals: keyed by (meter, channel, start), so an import and an export interval of the same
-- quarter-hour are two rows, and each channel's range is one contiguous stretch of the key.
CREATE TABLE intervals_0005 (
    meter              TEXT NOT NULL,
    channel            TEXT NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export')),
    start              INTEGER NOT NULL,
    "end"              INTEGER NOT NULL,
    wh                 INTEGER NOT NULL CHECK (wh >= 0),
    quality            TEXT NOT NULL,
    register_start_wh  INTEGER NOT NULL,
    register_end_wh    INTEGER NOT NULL,
    credit_seq         INTEGER NOT NULL,
    method             INTEGER,
    reason             INTEGER,
    start_grade        TEXT NOT NULL DEFAULT 'A',
    end_grade          TEXT NOT NULL DEFAULT 'A',
    PRIMARY KEY (meter, channel, start)
) WITHOUT ROWID;
INSERT INTO intervals_0005 (meter, channel, start, "end", wh, quality, register_start_wh, register_end_wh,
                            credit_seq, method, reason, start_grade, end_grade)
    SELECT meter, 'import', start, "end", wh, quality, register_start_wh, register_end_wh, credit_seq, method,
           reason, start_grade, end_grade FROM intervals;
DROP TABLE intervals;
ALTER TABLE intervals_0005 RENAME TO intervals;

-- The outbox: ids are kept (every uplink's cursor, batch and the Stellar uplink's lines are ids),
-- and so is AUTOINCREMENT's high-water mark in sqlite_sequence, so no id is ever handed out twice.
CREATE TEMP TABLE credits_sequence_0005 AS SELECT seq FROM sqlite_sequence WHERE name = 'credits';
CREATE TABLE credits_0005 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    meter       TEXT NOT NULL,
    channel     TEXT NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export')),
    seq         INTEGER NOT NULL,
    start       INTEGER NOT NULL,
    wh          INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    wire        TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    UNIQUE (meter, channel, seq)
);
INSERT INTO credits_0005 (id, meter, channel, seq, start, wh, hash, wire, created_ms)
    SELECT id, meter, 'import', seq, start, wh, hash, wire, created_ms FROM credits ORDER BY id;
DROP TABLE credits;
ALTER TABLE credits_0005 RENAME TO credits;
UPDATE sqlite_sequence
   SET seq = MAX(seq, COALESCE((SELECT seq FROM temp.credits_sequence_0005), 0))
 WHERE name = 'credits';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'credits', seq FROM temp.credits_sequence_0005
     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'credits');
DROP TABLE temp.credits_sequence_0005;
