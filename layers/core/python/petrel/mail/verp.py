"""The VERP envelope sender of a Petrel message, in one place.

Submission stores it on each message (`MessageRecord.return_path`, shown on `GET /v1/emails/{id}`) and
the send worker relays with the stored value, so the address a client correlates on and the address a
delivery report comes back to are the same string. (`petrel.mail.reports.verp_message_id` reads it back.)
"""

from __future__ import annotations

from petrel.mail.addresses import parse_mailbox

VERP_LOCAL_PREFIX = "bounces+"


def return_path(message_id: str, *, from_address: str, return_path_domain: str | None) -> str:
    """`bounces+<message id>@<return-path domain>`: the sending domain's return-path domain, or the
    From address's own domain when the sending domain is not (or no longer) configured."""
    domain = return_path_domain or parse_mailbox(from_address).domain
    return f"{VERP_LOCAL_PREFIX}{message_id}@{domain}"
