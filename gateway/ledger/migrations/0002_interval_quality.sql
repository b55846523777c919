-- Schema version 2: NEM12 quality detail per interval, and register epochs.

-- Method (e.g. 54 linear interpolation) for E/S/F intervals; NEM12 reason code.
ALTER TABLE intervals ADD COLUMN method INTEGER;
ALTER TABLE intervals ADD COLUMN reason INTEGER;

-- Register epoch bookkeeping: offset added to the meter's raw register so that
-- a rollover or a replaced/reset meter continues one non-decreasing register.
ALTER TABLE meters ADD COLUMN register_offset_wh INTEGER NOT NULL DEFAULT 0;
ALTER TABLE meters ADD COLUMN last_raw_wh INTEGER;
