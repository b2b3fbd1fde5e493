-- Tiny ERP service orders cache (issue 3). Column names follow the seed and Tiny's own
-- vocabulary; every order keeps its raw JSON so nothing the API said is lost.

CREATE TABLE IF NOT EXISTS ordens_servico (
    id                  bigint PRIMARY KEY,          -- Tiny's idOrdemServico
    numero              text,
    situacao            smallint NOT NULL CHECK (situacao BETWEEN 0 AND 9),
    data_emissao        date,
    data_prevista       timestamp,                   -- São Paulo local time, as Tiny gives it
    data_conclusao      timestamptz,                 -- from the API, or when we saw it finish
    cliente_id          bigint,
    cliente_nome        text,
    cliente_codigo      text,
    cliente_tipo_pessoa text,
    cliente_cpf_cnpj    text,
    cliente_email       text,
    cliente_celular     text,
    cliente_municipio   text,
    cliente_uf          text,
    total_servicos      numeric(14, 2),
    total_pecas         numeric(14, 2),
    total_ordem_servico numeric(14, 2),
    desconto            numeric(14, 2),              -- "0,00" → 0.00
    desconto_percentual numeric(7, 3),               -- "10%" → 10.000
    equipamento         text,
    tecnico             text,
    categoria           text,
    list_hash           text NOT NULL,               -- fingerprint of the list item: changed → refetch detail
    raw                 jsonb NOT NULL,              -- the detail reply, untouched
    raw_list            jsonb NOT NULL,              -- the list item, untouched
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at        timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_ordens_servico_situacao_emissao ON ordens_servico (situacao, data_emissao);

-- updated_at moves only when the order itself changed, not when a sync merely saw it again
-- (last_seen_at); the bulk upsert already skips rows whose values are all the same.
CREATE OR REPLACE FUNCTION ordens_servico_touch() RETURNS trigger AS $$
BEGIN
    IF NEW.raw IS DISTINCT FROM OLD.raw OR NEW.raw_list IS DISTINCT FROM OLD.raw_list
       OR NEW.situacao IS DISTINCT FROM OLD.situacao
       OR NEW.data_conclusao IS DISTINCT FROM OLD.data_conclusao THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS ordens_servico_touch ON ordens_servico;
CREATE TRIGGER ordens_servico_touch BEFORE UPDATE ON ordens_servico
    FOR EACH ROW EXECUTE FUNCTION ordens_servico_touch();

-- Every observed change of situacao; status_antigo is NULL for the first observation.
CREATE TABLE IF NOT EXISTS ordem_status_history (
    id            bigserial PRIMARY KEY,
    id_os         bigint NOT NULL,
    status_antigo smallint,
    status_novo   smallint NOT NULL,
    changed_at    timestamptz NOT NULL DEFAULT now(),
    origem        text NOT NULL                      -- which sync saw it (historical, incremental...)
);
CREATE INDEX IF NOT EXISTS idx_ordem_status_history_os ON ordem_status_history (id_os, changed_at);

CREATE TABLE IF NOT EXISTS sync_metadata (
    chave text PRIMARY KEY,
    valor text
);

-- The seed's failure table, plus when the next retry is due.
CREATE TABLE IF NOT EXISTS import_failures (
    id_ordem           bigint PRIMARY KEY,
    primeira_tentativa timestamp DEFAULT CURRENT_TIMESTAMP,
    ultima_tentativa   timestamp DEFAULT CURRENT_TIMESTAMP,
    erro               text,
    tentativas         integer DEFAULT 1,
    resolvido          boolean DEFAULT FALSE,
    dados_api          jsonb,
    proxima_tentativa  timestamptz
);
CREATE INDEX IF NOT EXISTS idx_import_failures_resolvido ON import_failures (resolvido);
CREATE INDEX IF NOT EXISTS idx_import_failures_tentativas ON import_failures (tentativas);

-- Resume points of the month partitions (lib/checkpoints.py); lives here so a page of
-- orders and its checkpoint commit in one transaction.
CREATE TABLE IF NOT EXISTS sync_checkpoints (
    pipeline      text NOT NULL,
    partition_key text NOT NULL,
    status        text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    position      jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, partition_key)
);

-- The OAuth token pair, shared by every worker; renewed under a row lock by one at a time.
CREATE TABLE IF NOT EXISTS tiny_oauth_tokens (
    account           text PRIMARY KEY,              -- the client_id
    access_token      text,
    access_expires_at timestamptz,
    refresh_token     text NOT NULL,
    refresh_expires_at timestamptz,
    renewed_at        timestamptz NOT NULL DEFAULT now()
);
