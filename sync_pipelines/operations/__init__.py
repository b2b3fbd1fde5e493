"""Cross-source Dagster pieces: schema migrations, health, run-failure alerts."""
