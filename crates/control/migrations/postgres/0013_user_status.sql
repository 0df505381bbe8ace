-- People who signed up in the developer portal wait for an admin's approval ('pending').
ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
