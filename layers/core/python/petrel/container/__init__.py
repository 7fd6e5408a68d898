"""Composition: each function's container wires adapters into services, lazily, so a function pays
at cold start only for what it uses. One module per function."""

from __future__ import annotations

from functools import cache

from petrel.container.admin import admin_deps, redrive_deps
from petrel.container.api import ApiContainer
from petrel.container.authorizer import AuthorizerContainer
from petrel.container.sweeper import SweeperContainer
from petrel.container.worker import WorkerContainer
from petrel.settings import ApiSettings, AuthorizerSettings, SendWorkerSettings, SweeperSettings

__all__ = [
    "ApiContainer",
    "AuthorizerContainer",
    "SweeperContainer",
    "WorkerContainer",
    "admin_deps",
    "redrive_deps",
]


@cache
def authorizer() -> AuthorizerContainer:
    return AuthorizerContainer(AuthorizerSettings.from_env())


@cache
def api() -> ApiContainer:
    return ApiContainer(ApiSettings.from_env())


@cache
def worker() -> WorkerContainer:
    return WorkerContainer(SendWorkerSettings.from_env())


@cache
def sweeper() -> SweeperContainer:
    return SweeperContainer(SweeperSettings.from_env())


def reset() -> None:
    """Forget built containers and clients (tests and the local stack change the environment)."""
    from petrel.adapters.aws import client

    for factory in (authorizer, api, worker, sweeper):
        factory.cache_clear()
    client.cache_clear()
