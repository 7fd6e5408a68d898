"""What the CLI's admin commands are built on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from petrel.container.base import _client, _message_store, _tenant_store

if TYPE_CHECKING:
    from petrel.services.redrive import RedriveDeps
    from petrel.services.tenants import AdminDeps


def admin_deps(tenants_table: str, secrets_prefix: str) -> AdminDeps:
    from petrel.adapters.clock import SystemClock
    from petrel.adapters.secrets import SecretsManagerStore
    from petrel.services.tenants import AdminDeps

    return AdminDeps(
        tenants=_tenant_store(tenants_table),
        secrets=SecretsManagerStore(_client("secretsmanager")),
        clock=SystemClock(),
        secrets_prefix=secrets_prefix,
    )


def redrive_deps(messages_table: str) -> RedriveDeps:
    """What `petrel dlq redrive` needs to reopen the messages of the jobs it puts back."""
    from petrel.adapters.clock import SystemClock
    from petrel.services.redrive import RedriveDeps

    return RedriveDeps(messages=_message_store(messages_table), clock=SystemClock())
