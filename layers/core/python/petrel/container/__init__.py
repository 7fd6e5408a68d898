"""Composition: one container per function (petrel.container.<function>), built from that function's
settings model, wiring adapters (and caching adapters) into services lazily, so a function pays at cold
start only for what it uses. Handlers receive their container (petrel.entrypoints); nothing here is a
process-wide singleton.

Importing this package imports no container module: `from petrel.container.worker import
WorkerContainer` costs the worker nothing of the API's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from petrel.container.api import ApiContainer
    from petrel.container.authorizer import AuthorizerContainer
    from petrel.container.sweeper import SweeperContainer
    from petrel.container.worker import WorkerContainer

__all__ = ["ApiContainer", "AuthorizerContainer", "SweeperContainer", "WorkerContainer"]

# Each name exported here, and the module that defines it (imported only when the name is used).
_LAZY = {
    "ApiContainer": "api",
    "AuthorizerContainer": "authorizer",
    "SweeperContainer": "sweeper",
    "WorkerContainer": "worker",
}


def __getattr__(name: str) -> Any:
    """The containers by name, each module imported on first use (a worker never imports the API's)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"petrel.container.{_LAZY[name]}"), name)
