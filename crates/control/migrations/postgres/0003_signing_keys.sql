-- The token service's ES256 signing keys. The newest unretired key signs; retired keys stay
-- published (JWKS, snapshots) until the tokens they signed have expired.

CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    private_key TEXT    NOT NULL,
    x           TEXT    NOT NULL,
    y           TEXT    NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
