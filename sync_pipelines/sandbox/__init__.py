"""The sandbox: simulators of every external service, an embedded PostgreSQL, demo data and
the demo runner. Test fixtures and a demo only; production code never imports this package."""
