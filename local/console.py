"""The `make run` console: one readable line per event, no metric JSON.

Powertools' Metrics print each flush as one line of CloudWatch EMF JSON on stdout (deployed, CloudWatch
Logs turns them into metrics). Locally they would bury the log lines, so `MetricsToFile` sends every
EMF line to a file under the work directory and everything else to the console.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import TextIO

EMF_PREFIX = '{"_aws":'


class MetricsToFile(io.TextIOBase):
    """A stdout that routes complete lines: EMF metric documents to `path`, the rest to `console`.

    `print` writes a line in two calls (the text, then the newline) and the functions run on threads,
    so each thread's partial line is kept apart until its newline arrives.
    """

    def __init__(self, console: TextIO, path: Path) -> None:
        super().__init__()
        self._console = console
        self._metrics = path.open("a", encoding="utf-8")
        self._partial = threading.local()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        pending: str = getattr(self._partial, "text", "") + text
        *lines, rest = pending.split("\n")
        self._partial.text = rest
        if lines:
            with self._lock:
                for line in lines:
                    target = self._metrics if line.startswith(EMF_PREFIX) else self._console
                    target.write(line + "\n")
                self._console.flush()
                self._metrics.flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._console.flush()
            self._metrics.flush()

    def close(self) -> None:
        self.flush()
        self._metrics.close()
        super().close()
