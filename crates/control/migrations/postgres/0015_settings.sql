-- Settings the control plane keeps for itself: the key check (a known text sealed with the
-- secret key at first start: every later start, and every other control-plane node, must
-- open it with its key before it may seal or open anything).
CREATE TABLE settings (
    name        TEXT    PRIMARY KEY,
    value       TEXT    NOT NULL
);
