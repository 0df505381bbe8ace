-- The trace context (W3C traceparent) of the deploy that made this snapshot version, when
-- that deploy was traced: its nodes' applies are recorded as its children.
ALTER TABLE snapshots ADD COLUMN trace TEXT;
