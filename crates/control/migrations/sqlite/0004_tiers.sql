-- Throttling tiers.

CREATE TABLE tiers (
    id          INTEGER PRIMARY KEY,
    name_key    TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
