-- The limit the API itself announced (e.g. Tiny's X-RateLimit-Limit), kept apart from the
-- bucket's shape so that a process starting with its configured cap does not undo what
-- another process already learned: the bucket runs at min(configured cap, announced).
ALTER TABLE rate_limit_buckets
    ADD COLUMN IF NOT EXISTS announced_limit integer CHECK (announced_limit >= 1);
