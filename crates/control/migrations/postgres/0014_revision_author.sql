-- Who made each revision (`user:NAME`, `admin-token:NAME`, or empty for older ones).
ALTER TABLE revisions ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
