-- What each node's active health checks hold out of balancing, as it last reported
-- (a JSON list of {service, endpoint}; NULL when none).
ALTER TABLE nodes ADD COLUMN unhealthy_endpoints TEXT;
