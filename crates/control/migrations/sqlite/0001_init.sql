-- Portico control plane, first schema. Portable SQL (PostgreSQL gets its own folder).
-- Objects are stored as their JSON spec plus the columns that are looked up or joined on.

CREATE TABLE admin_tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE gateways (
    id          INTEGER PRIMARY KEY,
    name_key    TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    builtin     INTEGER NOT NULL DEFAULT 0,
    token_hash  TEXT    UNIQUE,
    jwt_secret  TEXT,
    linked_at   INTEGER,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE services (
    id          INTEGER PRIMARY KEY,
    name_key    TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE routes (
    id          INTEGER PRIMARY KEY,
    name_key    TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE route_gateways (
    route_id    INTEGER NOT NULL REFERENCES routes(id) ON DELETE CASCADE,
    gateway_key TEXT    NOT NULL,
    PRIMARY KEY (route_id, gateway_key)
);

CREATE TABLE apis (
    id          INTEGER PRIMARY KEY,
    api_key     TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    lifecycle   TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE revisions (
    api_id      INTEGER NOT NULL REFERENCES apis(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    spec        TEXT    NOT NULL,
    note        TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (api_id, number)
);

CREATE TABLE deployments (
    api_id      INTEGER NOT NULL REFERENCES apis(id) ON DELETE CASCADE,
    gateway_id  INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    revision    INTEGER NOT NULL,
    deployed_at INTEGER NOT NULL,
    PRIMARY KEY (api_id, gateway_id),
    FOREIGN KEY (api_id, revision) REFERENCES revisions(api_id, number)
);

CREATE TABLE snapshots (
    gateway_id  INTEGER PRIMARY KEY REFERENCES gateways(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    hash        TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    compiled_at INTEGER NOT NULL
);

CREATE TABLE nodes (
    gateway_id      INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    node_id         TEXT    NOT NULL,
    hostname        TEXT    NOT NULL,
    applied_version INTEGER,
    applied_hash    TEXT,
    last_error      TEXT,
    last_seen       INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, node_id)
);
