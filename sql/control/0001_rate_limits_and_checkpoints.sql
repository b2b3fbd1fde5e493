-- The orchestration's own state, shared by every process and pod that runs syncs.

-- One token bucket per external API account (lib/ratelimit.py). Every process that calls
-- the API takes its tokens here, so concurrent runs and backfills share one budget.
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    name          text PRIMARY KEY,
    capacity      double precision NOT NULL CHECK (capacity >= 1),
    refill_per_s  double precision NOT NULL CHECK (refill_per_s > 0),
    tokens        double precision NOT NULL,
    blocked_until timestamptz,              -- set when the API says "wait" (429, remaining = 0)
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Resume points of long, paged work (lib/checkpoints.py): one row per pipeline partition.
CREATE TABLE IF NOT EXISTS sync_checkpoints (
    pipeline      text NOT NULL,
    partition_key text NOT NULL,
    status        text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    position      jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, partition_key)
);
