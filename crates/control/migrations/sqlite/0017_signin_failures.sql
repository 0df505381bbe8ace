-- Failed sign-ins by user name ('user:NAME', lower case) and by address ('addr:IP'), so
-- that the back-off holds across every control-plane node of one PostgreSQL database.
-- (One SQLite node keeps them in memory: the table stays empty there.)
CREATE TABLE signin_failures (
    key         TEXT    PRIMARY KEY,
    count       INTEGER NOT NULL,
    last        INTEGER NOT NULL
);
