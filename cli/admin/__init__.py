"""The administration commands: `tenant`, `key`, `domain`, `server` (petrel.services.tenants)."""
