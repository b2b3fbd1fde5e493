"""Shared mechanisms of every sync. Plain Python: no Dagster and no source imports here."""
