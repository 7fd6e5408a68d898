"""The MailU stand-in (real Postfix + Dovecot, local/mailu.py) as the integration tests start it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from local.mailu import MailuStandIn
from tests.support_mail import started_in_workdir


@contextlib.contextmanager
def running_standin(prefix: str, users: Mapping[str, str], domain: str = "petrel.test") -> Iterator[MailuStandIn]:
    """The stand-in for `domain` with `users` (address -> password), installed if need be and started
    in a work directory of its own; stopped and the directory removed on the way out."""

    def make(workdir: Path) -> MailuStandIn:
        standin = MailuStandIn(workdir, domain)
        standin.add_users(dict(users))
        return standin

    with started_in_workdir(prefix, make) as standin:
        yield standin
