-- What the sync last wrote to a slot's appointment (nome, telefone, email), so a booking
-- corrected on the portal (a name, a phone) reaches its appointment, field by field, unless
-- the clinic edited that field: an appointment field that no longer equals what the sync
-- wrote was edited locally and is left alone. NULL: the sync did not write the appointment
-- (it was made by hand and only linked), so the sync never changes it.
ALTER TABLE agenda_slots ADD COLUMN IF NOT EXISTS agendamento_synced JSONB;

-- Appointments the sync created before this column existed: take the slot's booking as what
-- was written. A field where the appointment differs from the booking may be a local edit
-- (or a correction the sync missed): it is kept, never overwritten on a guess.
UPDATE agenda_slots s
SET agendamento_synced = jsonb_build_object(
  'nome', s.payload->>'nome', 'telefone', s.payload->>'telefone', 'email', s.payload->>'email')
FROM agendamentos a
WHERE s.agendamento_id = a.id AND a.origem = 'DETRAN' AND s.agendamento_synced IS NULL;
