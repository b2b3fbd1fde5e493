-- The examiners whose agendas are synced (one Dagster dynamic partition each), their cached
-- portal sessions, and the last successful read of each examiner's day.

CREATE TABLE IF NOT EXISTS detran_examiners (
  usuario_id INTEGER PRIMARY KEY REFERENCES usuarios(id),
  cpf TEXT NOT NULL UNIQUE CHECK (cpf ~ '^[0-9]{11}$'),  -- the portal login, digits only
  password_encrypted TEXT NOT NULL,          -- Fernet token, key in DETRAN_CREDENTIALS_KEY
  profession TEXT NOT NULL CHECK (profession IN ('medico', 'psicologo')),
  unit TEXT,                                 -- idUnidTransito, when the portal offers several
  work_days SMALLINT[] NOT NULL DEFAULT '{1,2,3,4,5}',  -- ISO weekdays (1 = Monday)
  auto_sync BOOLEAN NOT NULL DEFAULT TRUE,   -- picked up by the schedules
  active BOOLEAN NOT NULL DEFAULT TRUE,      -- a dynamic partition; inactive ones are not synced
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CONSTRAINT detran_examiners_work_days_check CHECK (work_days <@ '{1,2,3,4,5,6,7}'::smallint[])
);

-- One cached portal session per examiner, shared by every run (the lock serialises them).
CREATE TABLE IF NOT EXISTS detran_sessions (
  usuario_id INTEGER PRIMARY KEY REFERENCES detran_examiners(usuario_id) ON DELETE CASCADE,
  portal_url TEXT NOT NULL,                  -- a session belongs to one portal
  cookies_encrypted TEXT NOT NULL,           -- Fernet token of the cookie jar (JSESSIONID...)
  context JSONB NOT NULL,                    -- the search form's method, unit and examiner id
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  last_used_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_detran_sessions_expires ON detran_sessions (expires_at);

-- When each examiner's day was last read successfully: a slot that vanished was last seen
-- at the previous read, which keeps last_seen_at exact without rewriting unchanged slots.
CREATE TABLE IF NOT EXISTS agenda_day_reads (
  usuario_id INTEGER NOT NULL REFERENCES usuarios(id),
  data DATE NOT NULL,
  last_read_at TIMESTAMPTZ NOT NULL,
  bookings INTEGER NOT NULL,
  PRIMARY KEY (usuario_id, data)
);
