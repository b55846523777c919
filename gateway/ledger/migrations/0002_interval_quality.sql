-- Schema version 2: NEM12 quality detail, register epochs, revisable intervals.

-- Per interval: NEM12 method and reason, and how each boundary value was
-- obtained (A, E54/76, S17/76, ...), so a late reading that improves one
-- boundary can recompute the interval's quality.
ALTER TABLE intervals ADD COLUMN method INTEGER;
ALTER TABLE intervals ADD COLUMN reason INTEGER;
ALTER TABLE intervals ADD COLUMN start_grade TEXT NOT NULL DEFAULT 'A';
ALTER TABLE intervals ADD COLUMN end_grade TEXT NOT NULL DEFAULT 'A';

-- Engine state: epoch offset (raw register + offset = virtual register, which
-- never decreases), last raw value, suspect readings below the series, and the
-- anchor boundary's grade.
ALTER TABLE meters ADD COLUMN register_offset_wh INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meters ADD COLUMN last_raw_wh INTEGER;
ALTER TABLE meters ADD COLUMN pending TEXT NOT NULL DEFAULT '[]';
ALTER TABLE meters ADD COLUMN anchor_grade TEXT NOT NULL DEFAULT 'A';
UPDATE meters SET last_raw_wh = last_wh;

-- A reading's value on the virtual register (NULL when it was not used), so a
-- late reading can be placed between its stored neighbours.
ALTER TABLE readings ADD COLUMN virtual_wh INTEGER;
UPDATE readings SET virtual_wh = register_wh WHERE disposition = 'accepted';
