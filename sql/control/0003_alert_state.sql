-- One row per alert condition (e.g. 'tiny:reauthorization', 'detran:login:7'): whether it
-- is active and since when. Alerts are sent only when a row changes state, so restarts,
-- repeated sensor ticks and retried runs never send the same alert twice (lib/alerts.py).
CREATE TABLE IF NOT EXISTS alert_state (
    condition_key text PRIMARY KEY,
    active boolean NOT NULL,
    since timestamptz NOT NULL DEFAULT now(),        -- when the current state began
    last_change timestamptz NOT NULL DEFAULT now(),  -- last raise or resolve
    details jsonb                                    -- the numbers behind the last change
);

CREATE INDEX IF NOT EXISTS idx_alert_state_active ON alert_state (condition_key) WHERE active;
