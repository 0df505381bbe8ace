-- Consumers (who calls APIs), their subscriptions and their credentials.

CREATE TABLE consumers (
    id          INTEGER PRIMARY KEY,
    name_key    TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    consumer_id INTEGER NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
    api_id      INTEGER NOT NULL REFERENCES apis(id) ON DELETE CASCADE,
    tier        TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (consumer_id, api_id)
);

-- An API key (kind 'api_key') or a client id/secret pair (kind 'client'); secrets hashed.
CREATE TABLE credentials (
    id          TEXT    PRIMARY KEY,
    consumer_id INTEGER NOT NULL REFERENCES consumers(id) ON DELETE CASCADE,
    kind        TEXT    NOT NULL,
    key_type    TEXT    NOT NULL,
    secret_hash TEXT    NOT NULL UNIQUE,
    hint        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX credentials_consumer ON credentials(consumer_id);
