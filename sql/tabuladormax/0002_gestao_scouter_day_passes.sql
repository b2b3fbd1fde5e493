-- A day is final only once it has ended in São Paulo plus a margin (issue 14): until then
-- each pass over it leaves it open and the next pass re-reads it from an overlap.
-- pass_started_at: when the pass now under way over processing_date began (kept across a
--   pause or crash inside the pass; everything updated more than the margin before it has
--   been read by that pass);
-- next_pass_at: the earliest time the driver runs the next pass of a day not yet final.
-- cursor_id NULL with cursor_updated_at set means "from that instant, inclusive".
ALTER TABLE gestao_scouter_export_jobs ADD COLUMN IF NOT EXISTS pass_started_at timestamptz;
ALTER TABLE gestao_scouter_export_jobs ADD COLUMN IF NOT EXISTS next_pass_at timestamptz;
