-- Provenance (issue 18): the Dagster run that last changed a ticket's sync columns, made a
-- protocol link, or wrote a sync-run row. NULL before this migration or outside a run.
ALTER TABLE support_tickets ADD COLUMN IF NOT EXISTS sync_run_id text;
ALTER TABLE hubsoft_protocol_map ADD COLUMN IF NOT EXISTS sync_run_id text;
ALTER TABLE hubsoft_sync_runs ADD COLUMN IF NOT EXISTS sync_run_id text;
CREATE INDEX IF NOT EXISTS support_tickets_sync_run_id_idx ON support_tickets (sync_run_id);
