"""What the integration and end-to-end tests share about the real mail servers they start."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

from local.mailu import ensure_installed, install_packages


class Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=Startable)


def mail_workdir(prefix: str) -> Path:
    """A new directory the mail daemons' users can cross: Postfix and Dovecot drop privileges, and
    pytest's tmp_path sits under a 0700 one."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(workdir, 0o755)
    return workdir


@contextlib.contextmanager
def started_in_workdir(prefix: str, make: Callable[[Path], S]) -> Iterator[S]:
    """What `make` builds on a new mail-reachable work directory (the MailU stand-in, or the local
    platform that runs one), started, with Postfix and Dovecot installed first if they are missing
    (never skipped: CI installs them); stopped and the directory removed on the way out."""
    if ensure_installed():
        install_packages()
    workdir = mail_workdir(prefix)
    server = make(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
