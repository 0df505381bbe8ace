-- Automatic certificates (ACME): the account per CA directory (credentials sealed), each
-- host's certificate and state, and the challenges open right now.

CREATE TABLE acme_accounts (
    directory           TEXT    PRIMARY KEY,
    credentials_sealed  TEXT    NOT NULL,
    created_at          BIGINT NOT NULL
);

CREATE TABLE acme_hosts (
    host          TEXT    PRIMARY KEY,
    state         TEXT    NOT NULL,
    cert_pem      TEXT,
    key_sealed    TEXT,
    not_before    BIGINT,
    not_after     BIGINT,
    last_error    TEXT,
    attempts      BIGINT NOT NULL DEFAULT 0,
    next_attempt  BIGINT NOT NULL DEFAULT 0,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE acme_challenges (
    token              TEXT    PRIMARY KEY,
    host               TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    key_authorization  TEXT    NOT NULL,
    created_at         BIGINT NOT NULL
);
