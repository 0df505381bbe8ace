-- Hosted web apps: the app (JSON spec), its immutable versions (a file manifest: path ->
-- content hash and size), where versions are deployed (per gateway and host), and the
-- content-addressed files (bytes on disk under <data>/blobs, one row per hash).

CREATE TABLE apps (
    id          INTEGER PRIMARY KEY,
    slug        TEXT    NOT NULL UNIQUE,
    spec        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE app_versions (
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    files       TEXT    NOT NULL,
    file_count  INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    note        TEXT    NOT NULL DEFAULT '',
    published   INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, number)
);

CREATE TABLE app_deployments (
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    gateway_id  INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    host        TEXT    NOT NULL DEFAULT '',
    version     INTEGER NOT NULL,
    previous    INTEGER,
    deployed_at INTEGER NOT NULL,
    PRIMARY KEY (app_id, gateway_id, host)
);

CREATE TABLE blobs (
    hash        TEXT    PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
