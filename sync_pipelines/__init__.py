"""sync_pipelines: the company's data syncs as one Dagster project."""
