"""Pydantic models: API requests and responses, stored records, queue jobs."""
