-- What the compiler noticed about a gateway's snapshot without refusing it (routes that
-- match the same requests), as a JSON array of sentences; shown by `portico status`.
ALTER TABLE snapshots ADD COLUMN warnings TEXT NOT NULL DEFAULT '[]';
