-- Alert messages and their delivery to each admin (lib/alerts.py). A transition of
-- alert_state and its message are committed together; each admin's delivery is a row that
-- is marked delivered only after Telegram accepted the message, so a failed send is retried
-- on the next evaluation or tick, and only for the admins not reached yet.
CREATE TABLE IF NOT EXISTS alert_messages (
    id             bigserial PRIMARY KEY,
    condition_key  text NOT NULL,
    change         text NOT NULL CHECK (change IN ('raised', 'resolved')),
    text           text NOT NULL,                   -- already redacted
    created_at     timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS alert_deliveries (
    message_id    bigint NOT NULL REFERENCES alert_messages (id) ON DELETE CASCADE,
    -- an admin's chat id, or '*' when the caller's own send function reaches every admin
    recipient     text NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    delivered_at  timestamptz,
    -- a refusal that resending cannot change (bot blocked, chat not found) or too old to send
    gave_up_at    timestamptz,
    last_error    text,                             -- redacted
    PRIMARY KEY (message_id, recipient)
);

CREATE INDEX IF NOT EXISTS idx_alert_deliveries_pending
    ON alert_deliveries (message_id) WHERE delivered_at IS NULL AND gave_up_at IS NULL;
