-- Energy channels: each (gateway, meter, channel) is a chain of its own (credit encoding v2 signs the
-- channel; a v1 credit is import). Every credit stored before is import; a constant default adds the
-- column without rewriting the table, then the key and the quarter-hour index gain the channel.
ALTER TABLE credits ADD COLUMN channel text NOT NULL DEFAULT 'import' CHECK (channel IN ('import', 'export'));
ALTER TABLE credits DROP CONSTRAINT credits_pkey;
ALTER TABLE credits ADD PRIMARY KEY (gateway, meter, channel, seq);
DROP INDEX credits_by_start;
CREATE INDEX credits_by_start ON credits (gateway, meter, channel, start);
