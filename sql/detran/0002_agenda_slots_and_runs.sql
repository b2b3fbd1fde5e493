-- agenda_slots and agenda_sync_runs exactly as the users' plan (seed 001) defines them:
-- same names, columns, defaults and keys, so its monitoring SQL runs unchanged. Added: the
-- CHECKs on status and the indexes those monitoring queries and the sync use.
CREATE TABLE IF NOT EXISTS agenda_slots (
  id BIGSERIAL PRIMARY KEY,
  source TEXT NOT NULL DEFAULT 'DETRAN',
  unidade_code TEXT NOT NULL DEFAULT 'DEFAULT',
  servico_code TEXT NOT NULL DEFAULT 'PERITO',
  data DATE NOT NULL,
  hora TIME NOT NULL,
  status TEXT NOT NULL DEFAULT 'available',  -- 'available' | 'booked' | 'removed'
  is_current BOOLEAN NOT NULL DEFAULT TRUE,  -- seen on the last successful read of its day
  external_uid TEXT NOT NULL,                -- sha1(unit, service, date, time, CPF digits)
  payload JSONB,                             -- the booking's fields (nome, cpf, telefone...)
  content_hash TEXT,                         -- sha256 of the normalised booking fields
  first_seen_at TIMESTAMPTZ,
  last_seen_at TIMESTAMPTZ,
  usuario_id INTEGER REFERENCES usuarios(id),
  agendamento_id INTEGER REFERENCES agendamentos(id),
  UNIQUE (source, external_uid),
  CONSTRAINT agenda_slots_status_check CHECK (status IN ('available', 'booked', 'removed'))
);

CREATE INDEX IF NOT EXISTS idx_agenda_slots_usuario_data ON agenda_slots (usuario_id, data, hora);
CREATE INDEX IF NOT EXISTS idx_agenda_slots_current_available
  ON agenda_slots (usuario_id, data, hora) WHERE is_current AND status = 'available';
CREATE INDEX IF NOT EXISTS idx_agenda_slots_removed
  ON agenda_slots (usuario_id, last_seen_at DESC) WHERE status = 'removed';
CREATE INDEX IF NOT EXISTS idx_agenda_slots_agendamento ON agenda_slots (agendamento_id);

CREATE TABLE IF NOT EXISTS agenda_sync_runs (
  id BIGSERIAL PRIMARY KEY,
  source TEXT NOT NULL DEFAULT 'DETRAN',
  usuario_id INTEGER REFERENCES usuarios(id),
  window_start DATE NOT NULL,
  window_end DATE NOT NULL,
  status TEXT NOT NULL,                      -- 'success' | 'partial' | 'failed' | 'running'
  totals JSONB,                              -- {"inserted", "updated", "removed", "unchanged"}
  error TEXT,
  error_details JSONB,
  started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ,
  CONSTRAINT agenda_sync_runs_status_check
    CHECK (status IN ('running', 'success', 'partial', 'failed'))
);

CREATE INDEX IF NOT EXISTS idx_agenda_sync_runs_usuario_started
  ON agenda_sync_runs (usuario_id, started_at DESC);
