-- Schema version 7: the billing tables in time order, and lighter batch records, to spare the SD card (issue 11).
--
-- Every commit rewrites each b-tree page it touches, whole. Keyed by meter first, a quarter-hour's
-- intervals and credit keys went into one leaf per meter: of the ~77 pages a commit of 20 meters
-- wrote, 28 were intervals and 27 the credits' (meter, channel, seq) index. Keyed by time first,
-- they land together in the last leaf or two, whatever the number of meters.
--
-- Lookups of one series stay cheap: interval starts lie on the 15-minute grid (the CHECK makes it
-- a rule), so a meter's range is read as one primary-key probe per grid step (see
-- gateway/ledger/queries.py, series_intervals_sql); an interval row holds its credit's id, so the
-- outbox needs no index but its ids; a series' chain tip, its last seq and hash, lives in `meters`
-- as before.
--
-- A one-off rewrite of both tables (through the WAL: about their size must be free); ids, seqs,
-- hashes and wire bytes are copied unchanged.

CREATE TABLE intervals_0007 (
    start              INTEGER NOT NULL CHECK (start % 900 = 0),
    meter              TEXT NOT NULL,
    channel            TEXT NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export')),
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
    credit_id          INTEGER NOT NULL,  -- credits.id of the interval's own credit (its seq is credit_seq)
    PRIMARY KEY (start, meter, channel)
) WITHOUT ROWID;
-- LEFT JOIN: an interval without its credit (a damaged file) fails the NOT NULL, never goes missing.
INSERT INTO intervals_0007 (start, meter, channel, "end", wh, quality, register_start_wh, register_end_wh,
                            credit_seq, method, reason, start_grade, end_grade, credit_id)
    SELECT i.start, i.meter, i.channel, i."end", i.wh, i.quality, i.register_start_wh, i.register_end_wh,
           i.credit_seq, i.method, i.reason, i.start_grade, i.end_grade, c.id
      FROM intervals i LEFT JOIN credits c ON c.meter = i.meter AND c.channel = i.channel AND c.seq = i.credit_seq
     ORDER BY i.start, i.meter, i.channel;
DROP TABLE intervals;
ALTER TABLE intervals_0007 RENAME TO intervals;

-- The outbox: ids and AUTOINCREMENT's high-water mark kept (as in 0005). No (meter, channel, seq)
-- index any more (it was one leaf per meter per commit): the writer takes each seq from the
-- series' tip in `meters`, and the trigger below refuses a credit whose seq is not past the tip
-- committed before its transaction.
CREATE TEMP TABLE credits_sequence_0007 AS SELECT seq FROM sqlite_sequence WHERE name = 'credits';
-- Compact credits (gateway/ledger/credit_rows.py): a row stores what cannot be derived, and the
-- wire text is a VIRTUAL generated column, rebuilt by SQLite when read (not stored). A credit the
-- template does not reproduce byte for byte (a v1 credit, say) keeps its whole text in wire_text.
-- The hashes are their raw 32 bytes (hash is generated too, as lower-case hex).
CREATE TABLE credits_0007 (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    meter              TEXT NOT NULL,
    channel            TEXT NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export')),
    seq                INTEGER NOT NULL,
    start              INTEGER NOT NULL,
    wh                 INTEGER NOT NULL,
    hash_b             BLOB NOT NULL,
    created_ms         INTEGER NOT NULL,
    gateway            TEXT,
    gateway_key        TEXT,
    corrects           INTEGER,
    quality            TEXT,
    register_start_wh  INTEGER,
    register_end_wh    INTEGER,
    prev_hash_b        BLOB,
    signature          TEXT,
    wire_text          TEXT,
    hash               TEXT NOT NULL GENERATED ALWAYS AS (lower(hex(hash_b))) VIRTUAL,
    wire               TEXT NOT NULL GENERATED ALWAYS AS (COALESCE(wire_text, '{"credit":{"channel":"' || channel || '","corrects":' || COALESCE(corrects, 'null') || ',"created_ms":' || created_ms || ',"end":' || (start + 900) || ',"gateway":"' || gateway || '","gateway_key":"' || gateway_key || '","kind":"' || CASE WHEN corrects IS NULL THEN 'interval' ELSE 'correction' END || '","meter":"' || meter || '","prev_hash":"' || lower(hex(prev_hash_b)) || '","quality":"' || quality || '","register_end_wh":' || register_end_wh || ',"register_start_wh":' || register_start_wh || ',"seq":' || seq || ',"start":' || start || ',"v":2,"wh":' || wh || '},"hash":"' || lower(hex(hash_b)) || '","signature":"' || signature || '"}')) VIRTUAL,
    CHECK (wire_text IS NOT NULL OR (gateway IS NOT NULL AND gateway_key IS NOT NULL AND quality IS NOT NULL
           AND register_start_wh IS NOT NULL AND register_end_wh IS NOT NULL AND prev_hash_b IS NOT NULL
           AND signature IS NOT NULL))
);
-- Every credit first whole, then made compact where the rebuilt text is exactly the stored one.
INSERT INTO credits_0007 (id, meter, channel, seq, start, wh, hash_b, created_ms, wire_text)
    SELECT id, meter, channel, seq, start, wh, ledger_unhex(hash), created_ms, wire FROM credits ORDER BY id;
UPDATE credits_0007
   SET gateway = json_extract(wire_text, '$.credit.gateway'),
       gateway_key = json_extract(wire_text, '$.credit.gateway_key'),
       corrects = json_extract(wire_text, '$.credit.corrects'),
       quality = json_extract(wire_text, '$.credit.quality'),
       register_start_wh = json_extract(wire_text, '$.credit.register_start_wh'),
       register_end_wh = json_extract(wire_text, '$.credit.register_end_wh'),
       prev_hash_b = ledger_unhex(json_extract(wire_text, '$.credit.prev_hash')),
       signature = json_extract(wire_text, '$.signature')
 WHERE json_extract(wire_text, '$.credit.v') = 2;
UPDATE credits_0007 SET wire_text = NULL
 WHERE wire_text IS NOT NULL AND signature IS NOT NULL AND ('{"credit":{"channel":"' || channel || '","corrects":' || COALESCE(corrects, 'null') || ',"created_ms":' || created_ms || ',"end":' || (start + 900) || ',"gateway":"' || gateway || '","gateway_key":"' || gateway_key || '","kind":"' || CASE WHEN corrects IS NULL THEN 'interval' ELSE 'correction' END || '","meter":"' || meter || '","prev_hash":"' || lower(hex(prev_hash_b)) || '","quality":"' || quality || '","register_end_wh":' || register_end_wh || ',"register_start_wh":' || register_start_wh || ',"seq":' || seq || ',"start":' || start || ',"v":2,"wh":' || wh || '},"hash":"' || lower(hex(hash_b)) || '","signature":"' || signature || '"}') = wire_text;
DROP TABLE credits;
ALTER TABLE credits_0007 RENAME TO credits;
UPDATE sqlite_sequence
   SET seq = MAX(seq, COALESCE((SELECT seq FROM temp.credits_sequence_0007), 0))
 WHERE name = 'credits';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'credits', seq FROM temp.credits_sequence_0007
     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'credits');
DROP TABLE temp.credits_sequence_0007;

CREATE TRIGGER credits_seq_after_tip BEFORE INSERT ON credits
WHEN NEW.seq <= (SELECT last_seq FROM meters WHERE meter = NEW.meter AND channel = NEW.channel)
BEGIN
    SELECT RAISE(ABORT, 'a credit''s seq must follow its series'' chain tip (meters.last_seq)');
END;

-- Batch records: keyed by their primary key alone (WITHOUT ROWID), so recording a batch writes
-- one b-tree page fewer than a rowid table with a separate key index: two transactions per
-- batch, every quarter-hour. For the same reason no other index (see below).
CREATE TABLE uplink_batches_0007 (
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
) WITHOUT ROWID;
INSERT INTO uplink_batches_0007 (uplink, batch_key, first_id, last_id, n_credits, state, attempts, created_ms,
                                 settled_ms, detail)
    SELECT uplink, batch_key, first_id, last_id, n_credits, state, attempts, created_ms, settled_ms, detail
      FROM uplink_batches;
DROP TABLE uplink_batches;
ALTER TABLE uplink_batches_0007 RENAME TO uplink_batches;
-- No (uplink, state) index: it was one more page in both of a batch's transactions, and the open
-- batches are found by a scan of the uplink's records, which pruning keeps to the retention
-- (at one batch per quarter-hour, under 10 000 short rows).

-- Raw readings keyed by time first (WITHOUT ROWID): one b-tree, not a table and a time index,
-- both of which a commit wrote the last pages of. The key is the whole reading but its source
-- and virtual value, so the only rows it cannot hold twice are the same reading refused or
-- repeated twice with the same verdict (kept once: ON CONFLICT DO NOTHING in the ingest).
CREATE TABLE readings_0007 (
    t_ms         INTEGER NOT NULL,
    meter        TEXT NOT NULL,
    channel      TEXT NOT NULL DEFAULT 'import',
    disposition  TEXT NOT NULL,
    register_wh  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    virtual_wh   INTEGER,
    PRIMARY KEY (t_ms, meter, channel, disposition, register_wh)
) WITHOUT ROWID;
INSERT INTO readings_0007 (t_ms, meter, channel, disposition, register_wh, source, virtual_wh)
    SELECT t_ms, meter, channel, disposition, register_wh, source, virtual_wh FROM readings
     WHERE true ORDER BY t_ms, meter, channel, disposition, register_wh, rowid
    ON CONFLICT DO NOTHING;
DROP TABLE readings;
ALTER TABLE readings_0007 RENAME TO readings;
