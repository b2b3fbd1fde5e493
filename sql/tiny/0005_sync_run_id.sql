-- Provenance (issue 18): the Dagster run that last changed each row, NULL for rows written
-- before this migration or outside a Dagster run. "Rows of run X" is an index lookup.
ALTER TABLE ordens_servico ADD COLUMN IF NOT EXISTS sync_run_id text;
ALTER TABLE ordem_status_history ADD COLUMN IF NOT EXISTS sync_run_id text;
ALTER TABLE import_failures ADD COLUMN IF NOT EXISTS sync_run_id text;
CREATE INDEX IF NOT EXISTS idx_ordens_servico_sync_run_id ON ordens_servico (sync_run_id);
CREATE INDEX IF NOT EXISTS idx_ordem_status_history_sync_run_id
    ON ordem_status_history (sync_run_id);
CREATE INDEX IF NOT EXISTS idx_import_failures_sync_run_id ON import_failures (sync_run_id);
