-- `path_prefix` matches no longer rewrite the matched prefix to `/` unless a rewrite says so.
-- On SQLite this migration wrote that rewrite out into routes stored before; no route
-- stored in PostgreSQL predates it (imports carry the current form), so nothing to do.
SELECT 1;
