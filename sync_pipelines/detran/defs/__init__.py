"""DETRAN-SP examiner agenda in Dagster (group ``detran``): ``defs`` is its Definitions.

- ``detran/agenda_slots``: one partition per day × examiner (``2025-03-12|1``; days in
  America/Sao_Paulo up to 14 days ahead, examiners are the dynamic partitions
  ``detran_examiners``). Reads that day from the e-CNHsp portal and upserts its bookings
  into ``agenda_slots``; marks vanished ones removed only after a successful read; one
  ``agenda_sync_runs`` row per run. Fails (no materialization) when the day could not be
  read, or when another sync of the same examiner holds its lock.
- ``detran/agendamentos``: the same partitions; current available slots → ``agendamentos``.
- ``detran_examiners_sensor``: adds every active examiner of ``detran_examiners`` as a
  partition (running by default: without it a new examiner is never synced).
- ``detran_next_3_days`` (every 15 min) and ``detran_days_4_to_14`` (every 2 h): one run per
  tick of ``detran_all_examiners_sync`` over every examiner with auto-sync (a partition range;
  ``partition_ranges``). Running by default: the users rely on them, and each examiner's
  ``auto_sync`` flag is the switch that says who is synced.

Guards (issue 10, ../guards.py): ``agenda_slots`` carries two checks, evaluated on every run
(also on a failed one): ``removal_share_within_limit`` (a read removing more than
``DETRAN_REMOVAL_ALERT_SHARE`` of the examiner's current slots) and
``run_failure_rate_within_limit`` (failed runs of the examiner over 24 h above
``DETRAN_FAILURE_RATE_ALERT``). Mass removals and refused logins alert the admins on
Telegram (the project's ``telegram`` resource) once when they start and once when they
clear (alert state in the ``control_db`` resource's database).

Modules: ``partitions`` (day × examiner), ``partition_ranges`` (a run over many
partitions), ``resources`` (the portal resource), ``assets``
(the two assets), ``checks`` (their checks and alerts), ``automation`` (job, sensor,
schedules).
"""

from dagster import Definitions

from .assets import agenda_slots, agendamentos
from .automation import (
    detran_agenda_job,
    detran_all_examiners_job,
    detran_days_4_to_14,
    detran_examiners_sensor,
    detran_next_3_days,
    window_run_requests,
)
from .checks import AGENDA_CHECKS, FAILURE_RATE_CHECK, REMOVAL_CHECK
from .partitions import (
    DAYS_AHEAD,
    EXAMINERS_PARTITIONS,
    TZ,
    agenda_partitions,
    days_partitions,
    examiner_partitions,
    partition_key,
    split_partition,
)
from .resources import DetranPortalResource

defs = Definitions(
    assets=[agenda_slots, agendamentos],
    jobs=[detran_agenda_job, detran_all_examiners_job],
    sensors=[detran_examiners_sensor],
    schedules=[detran_next_3_days, detran_days_4_to_14],
    resources={"detran_portal": DetranPortalResource()},
)

__all__ = [
    "AGENDA_CHECKS",
    "DAYS_AHEAD",
    "EXAMINERS_PARTITIONS",
    "FAILURE_RATE_CHECK",
    "REMOVAL_CHECK",
    "TZ",
    "DetranPortalResource",
    "agenda_partitions",
    "agenda_slots",
    "agendamentos",
    "days_partitions",
    "defs",
    "detran_agenda_job",
    "detran_all_examiners_job",
    "detran_days_4_to_14",
    "detran_examiners_sensor",
    "detran_next_3_days",
    "examiner_partitions",
    "partition_key",
    "split_partition",
    "window_run_requests",
]
