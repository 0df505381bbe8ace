-- App files in the database, in chunks of 1 MiB, so that every control-plane node of one
-- PostgreSQL database can serve a file another node took the upload of (each node keeps
-- them on its disk too, as a cache). SQLite keeps them on its one node's disk only: the
-- table stays empty there.
CREATE TABLE blob_chunks (
    hash        TEXT    NOT NULL,
    n           BIGINT NOT NULL,
    data        BYTEA   NOT NULL,
    PRIMARY KEY (hash, n)
);
