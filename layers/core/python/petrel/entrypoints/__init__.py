"""Each function's handler factory: `create_<function>(container)` returns the Lambda handler, with
every dependency taken from the container passed in (nothing reached through module singletons).

`functions/<name>/handler.py` (the deployed asset) only builds its container from the environment on
the first invocation (`on_first_call`); the local stack and the tests build containers of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any, Any], Any]


def on_first_call(build: Callable[[], Handler]) -> Handler:
    """A handler that builds the real one on its first invocation (the environment is validated at cold
    start, not at import, so importing a handler module never needs one) and reuses it afterwards."""
    built: list[Handler] = []
    lock = threading.Lock()

    def handler(event: Any, context: Any) -> Any:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0](event, context)

    return handler
