"""Tests of the local tenant sync (main WhatsApp database -> tenant databases)."""
