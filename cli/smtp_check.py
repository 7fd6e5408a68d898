"""`petrel server test`: the check lives in petrel.adapters.smtp_check (the admin API runs it too)."""

from petrel.adapters.smtp_check import Report, check_server, tls_context
from petrel.models.admin import Step

__all__ = ["Report", "Step", "check_server", "tls_context"]
