-- TabuladorMax → Gestão Scouter lead export (issue 6). Table and column names follow the
-- users' document (gestao_scouter_export_jobs / gestao_scouter_export_errors); the columns
-- after "-- added" are what the export needs to resume inside a day and to tell runs apart.
-- The TabuladorMax `leads` table itself belongs to the application and is not created here.

CREATE TABLE IF NOT EXISTS gestao_scouter_export_jobs (
    id                  bigserial PRIMARY KEY,
    status              text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'running', 'paused', 'completed', 'failed')),
    start_date          date NOT NULL,
    end_date            date,                        -- NULL: up to today (São Paulo), then completed
    processing_date     date,                        -- the day being exported (partially done)
    last_completed_date date,                        -- every day up to this one is exported
    total_leads         integer NOT NULL DEFAULT 0,
    exported_leads      integer NOT NULL DEFAULT 0,
    error_leads         integer NOT NULL DEFAULT 0,
    pause_reason        text,
    field_mappings      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    paused_at           timestamptz,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- added
    skipped_leads       integer NOT NULL DEFAULT 0,  -- last written by the reverse sync, unchanged since
    cursor_updated_at   timestamptz,                 -- keyset position inside processing_date
    cursor_id           bigint,
    generation          integer NOT NULL DEFAULT 0,  -- bumped by resume/reset: new Dagster run keys
    origin              text NOT NULL DEFAULT 'control'
                        CHECK (origin IN ('control', 'partition_run')),
    last_error          text,
    last_run_id         text,
    CHECK (end_date IS NULL OR end_date >= start_date)
);
CREATE INDEX IF NOT EXISTS idx_gs_export_jobs_active
    ON gestao_scouter_export_jobs (status) WHERE status IN ('pending', 'running');

CREATE TABLE IF NOT EXISTS gestao_scouter_export_errors (
    id               bigserial PRIMARY KEY,
    job_id           bigint NOT NULL REFERENCES gestao_scouter_export_jobs (id) ON DELETE CASCADE,
    lead_id          bigint,
    error_message    text NOT NULL,
    error_details    jsonb,                          -- PostgREST's code / details / hint
    response_status  integer,
    response_body    text,                           -- redacted
    lead_snapshot    jsonb,                          -- personal fields masked
    fields_sent      jsonb,                          -- destination columns of the request
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- added
    export_date      date                            -- the day (partition) the lead was exported in
);
CREATE INDEX IF NOT EXISTS idx_gs_export_errors_job ON gestao_scouter_export_errors (job_id);
CREATE INDEX IF NOT EXISTS idx_gs_export_errors_created ON gestao_scouter_export_errors (created_at);

-- Reverse sync (Gestão Scouter → TabuladorMax): where the last poll stopped, committed with
-- the rows it wrote so a crash never skips nor repeats a page.
CREATE TABLE IF NOT EXISTS gestao_scouter_reverse_sync_state (
    name              text PRIMARY KEY,
    cursor_updated_at timestamptz,
    cursor_id         bigint,
    rows_seen         bigint NOT NULL DEFAULT 0,
    rows_written      bigint NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
