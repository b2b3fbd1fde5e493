-- One row per observed status change (issue 14): a month run and an incremental run that
-- both see the same change must not both record it. Each order's history is numbered
-- (seq 1 = the first observation); a writer takes the next number under the order's row
-- lock and inserts ON CONFLICT (id_os, seq) DO NOTHING, so two writers that saw the same
-- change race for the same number and only one row is kept.

-- Rows equal in every column but the serial id are one observation written twice: keep the
-- first. Rows that differ in anything (time, origin) stay, each with its own number.
DELETE FROM ordem_status_history AS h
USING ordem_status_history AS first
WHERE h.id > first.id
  AND h.id_os = first.id_os
  AND h.status_antigo IS NOT DISTINCT FROM first.status_antigo
  AND h.status_novo = first.status_novo
  AND h.changed_at = first.changed_at
  AND h.origem = first.origem;

ALTER TABLE ordem_status_history ADD COLUMN IF NOT EXISTS seq integer;
UPDATE ordem_status_history AS h SET seq = numbered.seq
FROM (
    SELECT id, row_number() OVER (PARTITION BY id_os ORDER BY changed_at, id) AS seq
    FROM ordem_status_history
) AS numbered
WHERE numbered.id = h.id;
ALTER TABLE ordem_status_history ALTER COLUMN seq SET NOT NULL;
ALTER TABLE ordem_status_history
    ADD CONSTRAINT ordem_status_history_os_seq_key UNIQUE (id_os, seq);
