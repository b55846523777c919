-- Enrolment in the store (keys and hashed per-gateway tokens), pull cursors, and each credit's kind
-- as a column (the history rule reads it for every credit; it was parsed out of the wire JSON).
ALTER TABLE credits ADD COLUMN kind TEXT NOT NULL DEFAULT 'interval';
UPDATE credits SET kind = json_extract(wire, '$.credit.kind') WHERE json_extract(wire, '$.credit.kind') <> 'interval';
CREATE TABLE gateways (
    gateway TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    token_sha256 TEXT UNIQUE,          -- hex SHA-256 of the gateway's bearer token; NULL: none issued
    enrolled_ms INTEGER NOT NULL,
    revoked_ms INTEGER                 -- set: its batches are refused (403); its credits stay
);
CREATE TABLE pull_cursors (
    gateway TEXT PRIMARY KEY,
    cursor INTEGER NOT NULL,           -- the gateway's pull API cursor: every credit up to it is stored
    updated_ms INTEGER NOT NULL
);
