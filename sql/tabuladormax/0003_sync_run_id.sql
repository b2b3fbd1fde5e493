-- Provenance (issue 18): the Dagster run that wrote each export error row, and the one that
-- last wrote a lead back from Gestão Scouter (the reverse sync's local markers).
-- leads is TabuladorMax's own table: a nullable column is added only where it already
-- exists when this runs (no index: building one would block TabuladorMax's writes, and
-- the reverse sync writes few rows); the reverse sync stamps it only where it is there.
ALTER TABLE gestao_scouter_export_errors ADD COLUMN IF NOT EXISTS sync_run_id text;
CREATE INDEX IF NOT EXISTS idx_gs_export_errors_sync_run_id
    ON gestao_scouter_export_errors (sync_run_id);
DO $$
BEGIN
  IF to_regclass('leads') IS NOT NULL THEN
    ALTER TABLE leads ADD COLUMN IF NOT EXISTS sync_run_id text;
  END IF;
END
$$;
