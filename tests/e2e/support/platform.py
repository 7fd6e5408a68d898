"""The local platform as the end-to-end fixtures run it: in this process, on a mail-reachable work
directory of its own (tests/support_mail.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from local.platform import LocalConfig, LocalPlatform
from tests.support_mail import started_in_workdir


@contextlib.contextmanager
def running_platform(prefix: str, **config: Any) -> Iterator[LocalPlatform]:
    """A started LocalPlatform (`config`: LocalConfig's fields besides its work dir and API port),
    stopped and its work directory removed on the way out."""
    with started_in_workdir(
        prefix, lambda workdir: LocalPlatform(LocalConfig(workdir=workdir, api_port=0, **config))
    ) as platform:
        yield platform
