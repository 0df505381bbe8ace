-- People: roles, users' roles, their tokens and sessions, who owns an application
-- (consumer), and the audit log.

CREATE TABLE roles (
    name_key    TEXT    PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    builtin     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
INSERT INTO roles (name_key, name, description, builtin, created_at) VALUES
    ('admin', 'admin', 'everything', 1, 0),
    ('publisher', 'publisher', 'services, routes, APIs, apps and uploaded certificates; reads gateways and tiers', 1, 0),
    ('subscriber', 'subscriber', 'the developer portal: visible APIs, own applications, keys and subscriptions', 1, 0);

-- Users made before roles existed signed in for the password grant: subscribers.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '["subscriber"]';

-- Personal access tokens ('token') and sign-in sessions ('session'); secrets hashed.
CREATE TABLE user_tokens (
    id           TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER
);
CREATE INDEX user_tokens_user ON user_tokens(user_id);

-- The user who made an application in the developer portal (NULL: made by an admin).
ALTER TABLE consumers ADD COLUMN owner_user TEXT;
CREATE INDEX consumers_owner_user ON consumers(owner_user);

CREATE TABLE audit (
    id             INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    actor          TEXT    NOT NULL,
    action         TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    object         TEXT    NOT NULL,
    before_version INTEGER,
    after_version  INTEGER
);
CREATE INDEX audit_actor ON audit(actor, id);
CREATE INDEX audit_kind ON audit(kind, id);
