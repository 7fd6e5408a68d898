"""The MailU stand-in (real Postfix + Dovecot, local/mailu.py) as the integration tests start it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from local.mailu import MailuStandIn, ensure_installed, install_packages


def mail_workdir(prefix: str) -> Path:
    """A new directory the mail daemons' users can cross (pytest's tmp_path sits under a 0700 one)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(workdir, 0o755)
    return workdir


@contextlib.contextmanager
def running_standin(prefix: str, users: Mapping[str, str], domain: str = "petrel.test") -> Iterator[MailuStandIn]:
    """The stand-in for `domain` with `users` (address -> password), installed if need be and started
    in a work directory of its own; stopped and the directory removed on the way out."""
    if ensure_installed():
        install_packages()
    workdir = mail_workdir(prefix)
    standin = MailuStandIn(workdir, domain)
    standin.add_users(dict(users))
    try:
        standin.start()
        yield standin
    finally:
        standin.stop()
        shutil.rmtree(workdir, ignore_errors=True)
