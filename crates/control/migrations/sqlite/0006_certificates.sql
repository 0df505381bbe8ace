-- Uploaded certificates (a private provider's): chain in clear, key sealed.

CREATE TABLE certificates (
    id          INTEGER PRIMARY KEY,
    name_key    TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    hosts       TEXT    NOT NULL,
    cert_pem    TEXT    NOT NULL,
    key_sealed  TEXT    NOT NULL,
    not_after   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
