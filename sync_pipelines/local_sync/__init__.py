"""Local tenant sync: main WhatsApp database → each tenant's MySQL/MariaDB."""
