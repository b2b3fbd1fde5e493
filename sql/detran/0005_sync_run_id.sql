-- Provenance (issue 18): the Dagster run that last changed each slot (upsert, removal,
-- appointment link or correction), and the Dagster run of each run-log row. NULL for rows
-- written before this migration or outside a Dagster run (the CLI).
-- agendamentos is the clinic application's table and gets no column: an appointment the
-- sync created or corrected is reached through its slot (agenda_slots.agendamento_id).
ALTER TABLE agenda_slots ADD COLUMN IF NOT EXISTS sync_run_id text;
ALTER TABLE agenda_sync_runs ADD COLUMN IF NOT EXISTS sync_run_id text;
CREATE INDEX IF NOT EXISTS idx_agenda_slots_sync_run_id ON agenda_slots (sync_run_id);
CREATE INDEX IF NOT EXISTS idx_agenda_sync_runs_sync_run_id ON agenda_sync_runs (sync_run_id);
