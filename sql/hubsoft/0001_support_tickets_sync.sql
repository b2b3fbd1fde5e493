-- HubSoft ticket sync: the bot's support_tickets gains sync columns; health checks and the
-- local <-> HubSoft protocol map are new tables of this project.

-- support_tickets belongs to the support bot. In production it already exists and this
-- CREATE is a no-op; where it does not (sandbox, tests, a fresh install) it creates the
-- minimal shape the bot writes: one row per ticket, the protocol the customer was given
-- (a HubSoft protocol, or LOC + 6 digits when HubSoft was down), the customer's CPF and
-- contact, the HubSoft service id (NULL when it could not be looked up offline), category,
-- description, status and creation time.
CREATE TABLE IF NOT EXISTS support_tickets (
    id              bigserial PRIMARY KEY,
    protocol        text NOT NULL UNIQUE,
    customer_cpf    text NOT NULL,
    customer_name   text,
    customer_phone  text,
    customer_email  text,
    service_id      bigint,
    category        text,
    description     text NOT NULL,
    status          text NOT NULL DEFAULT 'open',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The seed's sync columns (names kept), plus what recovery needs: attempts and the time of
-- the next try (backoff), when a create was last sent (a ticket with one set may already
-- exist in HubSoft: look it up before sending again), HubSoft's own status text, and when
-- the historical-context message was added. ADD COLUMN IF NOT EXISTS because the bot's
-- table may already have some of them (hubsoft_atendimento_id predates the sync).
ALTER TABLE support_tickets
    ADD COLUMN IF NOT EXISTS hubsoft_atendimento_id bigint,
    ADD COLUMN IF NOT EXISTS hubsoft_protocol text,
    ADD COLUMN IF NOT EXISTS sync_status text NOT NULL DEFAULT 'pending',
    ADD COLUMN IF NOT EXISTS synced_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_sync_attempt timestamptz,
    ADD COLUMN IF NOT EXISTS sync_error text,
    ADD COLUMN IF NOT EXISTS sync_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS next_sync_at timestamptz,
    ADD COLUMN IF NOT EXISTS create_sent_at timestamptz,
    ADD COLUMN IF NOT EXISTS hubsoft_status text,
    ADD COLUMN IF NOT EXISTS history_message_at timestamptz;

ALTER TABLE support_tickets DROP CONSTRAINT IF EXISTS support_tickets_sync_status_check;
ALTER TABLE support_tickets
    ADD CONSTRAINT support_tickets_sync_status_check
    CHECK (sync_status IN ('pending', 'synced', 'failed'));

-- Tickets the bot opened online already carry their HubSoft id: they are in sync.
UPDATE support_tickets
   SET sync_status = 'synced', synced_at = coalesce(synced_at, created_at)
 WHERE hubsoft_atendimento_id IS NOT NULL AND sync_status = 'pending';

-- One local ticket per HubSoft ticket: a second link to the same atendimento would be a
-- duplicate we failed to prevent.
CREATE UNIQUE INDEX IF NOT EXISTS support_tickets_hubsoft_id_key
    ON support_tickets (hubsoft_atendimento_id) WHERE hubsoft_atendimento_id IS NOT NULL;
-- What recovery reads: tickets still without a HubSoft id, oldest first.
CREATE INDEX IF NOT EXISTS support_tickets_unsynced_idx
    ON support_tickets (created_at) WHERE hubsoft_atendimento_id IS NULL;

-- Local protocol <-> HubSoft protocol, kept for reference (the seed's "mapeamento"): the
-- customer may quote either one.
CREATE TABLE IF NOT EXISTS hubsoft_protocol_map (
    local_protocol          text PRIMARY KEY,
    hubsoft_protocol        text NOT NULL UNIQUE,
    hubsoft_atendimento_id  bigint NOT NULL UNIQUE,
    ticket_id               bigint NOT NULL,
    -- 'created': opened by recovery; 'adopted': found in HubSoft after a lost reply.
    link_kind               text NOT NULL CHECK (link_kind IN ('created', 'adopted')),
    linked_at               timestamptz NOT NULL DEFAULT now()
);

-- Every health check (the sensor's and the jobs'), newest last: the report and the
-- schedules read the latest one.
CREATE TABLE IF NOT EXISTS hubsoft_health_checks (
    id          bigserial PRIMARY KEY,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL CHECK (kind IN ('quick', 'full')),
    online      boolean NOT NULL,
    latency_ms  double precision,
    error       text,
    -- 'online'/'offline' when this check changed the known state, else NULL.
    transition  text
);
CREATE INDEX IF NOT EXISTS hubsoft_health_checks_time_idx ON hubsoft_health_checks (checked_at);

-- One row per recovery or status-sync pass, for "last successful sync" in the report.
CREATE TABLE IF NOT EXISTS hubsoft_sync_runs (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('recovery', 'status')),
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL,  -- ok | partial | skipped | failed
    synced        integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    detail        text
);
CREATE INDEX IF NOT EXISTS hubsoft_sync_runs_kind_time_idx ON hubsoft_sync_runs (kind, finished_at);
