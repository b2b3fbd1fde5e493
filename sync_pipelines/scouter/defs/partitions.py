"""Names every part of the Gestão Scouter definitions shares: group, asset keys, the daily
partitions (one per São Paulo day; today included so an open-ended job reaches today)."""

from dagster import AssetKey, DailyPartitionsDefinition

TZ = "America/Sao_Paulo"
GROUP = "gestao_scouter"
SCHEMA_KEY = AssetKey(["gestao_scouter", "schema_validation"])
EXPORT_KEY = AssetKey(["gestao_scouter", "leads_export"])

# The first exportable day. A constant, not an environment variable: partitions are
# defined when the module is imported, and nothing reads the environment then.
START_DATE = "2024-01-01"

daily = DailyPartitionsDefinition(
    start_date=START_DATE,
    timezone=TZ,
    end_offset=1,  # today is exportable: a job with no end date runs up to today
)
