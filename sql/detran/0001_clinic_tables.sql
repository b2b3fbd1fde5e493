-- The clinic application's own tables that the DETRAN sync points at: usuarios (the
-- examiners' accounts) and agendamentos (appointments). The clinic database normally has
-- them already; they are created here only when no table of that name is visible on the
-- search path (the sandbox, tests, a fresh install), so an existing clinic table is never
-- touched or shadowed. `IF NOT EXISTS` alone would only look in the first schema of the
-- search path and could create a second, empty `detran.usuarios` next to `public.usuarios`.
DO $$
BEGIN
  IF to_regclass('usuarios') IS NULL THEN
    CREATE TABLE usuarios (
      id SERIAL PRIMARY KEY,
      nome TEXT NOT NULL,
      email TEXT,
      created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
  END IF;
  IF to_regclass('agendamentos') IS NULL THEN
    -- The columns the slots-to-appointments asset writes; a clinic table needs at least these.
    CREATE TABLE agendamentos (
      id SERIAL PRIMARY KEY,
      usuario_id INTEGER REFERENCES usuarios(id),
      nome TEXT,
      cpf TEXT,
      telefone TEXT,
      email TEXT,
      data DATE NOT NULL,
      hora TIME NOT NULL,
      tipo_exame TEXT,
      origem TEXT NOT NULL DEFAULT 'manual',
      status TEXT NOT NULL DEFAULT 'agendado',
      created_at TIMESTAMPTZ NOT NULL DEFAULT now()
    );
    CREATE INDEX idx_agendamentos_usuario_data ON agendamentos (usuario_id, data, hora);
  END IF;
END
$$;
