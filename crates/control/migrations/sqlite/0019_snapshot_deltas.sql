-- What changed from each snapshot version to the next, per gateway (a JSON
-- portico_model::delta::Changes, sealed like the snapshot when it carries private keys):
-- a node holding a recent version fetches only these. The last few per gateway are kept;
-- a node further behind gets the whole snapshot.
CREATE TABLE snapshot_deltas (
    gateway_id  INTEGER NOT NULL REFERENCES gateways(id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    hash        TEXT NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (gateway_id, version)
);
