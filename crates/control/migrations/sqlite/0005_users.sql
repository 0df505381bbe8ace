-- People who sign in to get tokens with the password grant; passwords hashed with Argon2id.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name_key      TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
