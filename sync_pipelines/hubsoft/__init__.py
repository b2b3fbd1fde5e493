"""HubSoft tickets: health, offline-ticket recovery, status sync, admin notifications."""
