-- `path_prefix` matches no longer rewrite the matched prefix to `/` unless a rewrite says so
-- (the Gateway API's PathPrefix). Stored forwarding routes that relied on the old default get
-- that rewrite written out, so they keep doing what they did.
UPDATE routes
SET spec = json_set(spec, '$.route.rewrite.prefix', '/'),
    version = version + 1
WHERE json_extract(spec, '$.route.match.path.path_prefix') IS NOT NULL
  AND json_extract(spec, '$.route.forward') IS NOT NULL
  AND json_extract(spec, '$.route.rewrite.prefix') IS NULL
  AND json_extract(spec, '$.route.rewrite.path') IS NULL;
