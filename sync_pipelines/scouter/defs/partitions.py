"""Names every part of the Gestão Scouter definitions shares: group, asset keys, the daily
partitions (one per São Paulo day; today included so an open-ended job reaches today)."""

import os

from dagster import AssetKey, DailyPartitionsDefinition

TZ = "America/Sao_Paulo"
GROUP = "gestao_scouter"
SCHEMA_KEY = AssetKey(["gestao_scouter", "schema_validation"])
EXPORT_KEY = AssetKey(["gestao_scouter", "leads_export"])

daily = DailyPartitionsDefinition(
    start_date=os.environ.get("GESTAO_SCOUTER_START_DATE", "2024-01-01"),
    timezone=TZ,
    end_offset=1,  # today is exportable: a job with no end date runs up to today
)
