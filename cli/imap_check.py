"""`petrel mailbox test`: the check lives in petrel.services.mailbox_check (the admin API runs it too)."""

from petrel.services.mailbox_check import check_mailbox

__all__ = ["check_mailbox"]
