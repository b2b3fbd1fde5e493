"""The DETRAN partitions: day (America/Sao_Paulo, up to 14 days ahead) × examiner.

Examiners are the dynamic partitions ``detran_examiners`` (added by the examiner sensor);
a key reads ``2025-03-12|1`` (date, usuario_id).
"""

import datetime as dt

from dagster import (
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
)

TZ = "America/Sao_Paulo"
EXAMINERS_PARTITIONS = "detran_examiners"
DAYS_AHEAD = 14  # the schedules sync today and the next 13 days

days_partitions = DailyPartitionsDefinition(
    start_date="2025-01-01", timezone=TZ, end_offset=DAYS_AHEAD + 1
)
examiner_partitions = DynamicPartitionsDefinition(name=EXAMINERS_PARTITIONS)
agenda_partitions = MultiPartitionsDefinition(
    {"date": days_partitions, "examiner": examiner_partitions}
)


def split_partition(key: str) -> tuple[dt.date, int]:
    """``"2025-03-12|1"`` → (date, usuario_id)."""
    keys = agenda_partitions.get_partition_key_from_str(key).keys_by_dimension
    return dt.date.fromisoformat(keys["date"]), int(keys["examiner"])


def partition_key(day: dt.date, usuario_id: int | str) -> MultiPartitionKey:
    return MultiPartitionKey({"date": day.isoformat(), "examiner": str(usuario_id)})
