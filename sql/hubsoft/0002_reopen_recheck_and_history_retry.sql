-- Status sync re-checks recently closed tickets (a ticket reopened in HubSoft must reopen
-- locally), and the history message of a recovered ticket is retried until HubSoft took it.

-- When the status sync saw HubSoft close the ticket; NULL while open, or when the bot closed
-- it itself. Closed tickets are re-checked for RECHECK_CLOSED_DAYS after this time.
ALTER TABLE support_tickets
    ADD COLUMN IF NOT EXISTS closed_at timestamptz,
    -- history message: attempts so far and the last failure (redacted); history_message_at
    -- (0001) stays NULL until HubSoft accepted the message, so every pass retries it.
    ADD COLUMN IF NOT EXISTS history_message_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS history_message_error text;

-- Before this migration only the status sync wrote status = 'closed' on linked tickets, at
-- its check time: that is the best known close time.
UPDATE support_tickets
   SET closed_at = coalesce(synced_at, created_at)
 WHERE status = 'closed' AND hubsoft_atendimento_id IS NOT NULL AND closed_at IS NULL;

CREATE INDEX IF NOT EXISTS support_tickets_recently_closed_idx
    ON support_tickets (closed_at) WHERE status = 'closed' AND closed_at IS NOT NULL;
