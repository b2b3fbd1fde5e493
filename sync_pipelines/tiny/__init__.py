"""Tiny ERP service orders → PostgreSQL (issue: Tiny historical load and incremental sync)."""
