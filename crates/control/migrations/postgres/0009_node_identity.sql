-- A node's identity is bound to a key it made at its first start (SHA-256 kept here), and
-- its last error carries its time.
ALTER TABLE nodes ADD COLUMN key_hash TEXT;
ALTER TABLE nodes ADD COLUMN last_error_at BIGINT;
