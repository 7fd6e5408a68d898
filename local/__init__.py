"""Local development stand-ins for Petrel (mail server, cloud services)."""
