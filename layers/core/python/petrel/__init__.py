"""Petrel: a serverless, multi-tenant email relay in front of each tenant's own MailU servers."""

__version__ = "0.1.0"
