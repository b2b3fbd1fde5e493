-- Which version of the parser (tiny/parse.py PARSER_VERSION) derived each order's columns
-- from its raw JSON (issue 18). The syncs stamp it on every row they write; tiny/reparse
-- re-derives stored orders with the current parser and stamps the rows whose values change.
-- NULL: stored before versions were recorded; the first reparse of its month stamps it.
ALTER TABLE ordens_servico ADD COLUMN IF NOT EXISTS parser_version integer;

-- tiny/reparse reads one emission month at a time, as the history load writes them.
CREATE INDEX IF NOT EXISTS idx_ordens_servico_emissao ON ordens_servico (data_emissao);
