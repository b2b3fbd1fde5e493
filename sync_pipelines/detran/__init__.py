"""DETRAN-SP examiner agenda (e-CNHsp portal) → PostgreSQL."""
