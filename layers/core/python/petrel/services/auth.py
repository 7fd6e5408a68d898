"""API keys: minted once, stored only as a hash, resolved to a tenant by the authorizer."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from petrel.errors import ConfigurationError, Unauthorized
from petrel.ids import new_id
from petrel.models.records import SCOPES, ApiKey, Scope
from petrel.ports import Clock, TenantStore

KEY_PREFIX = "ptl_"
# API Gateway refuses an API key value shorter than this.
USAGE_KEY_MIN_LENGTH = 20


def usage_key(name_prefix: str, tenant_id: str) -> str:
    """The value of a tenant's API Gateway API key, which the authorizer returns as its
    `usageIdentifierKey` so that the tenant's usage plan throttles it at the edge.

    Deterministic (the environment's name prefix and the tenant id), so the authorizer needs no lookup,
    and not a secret: with the API's key source AUTHORIZER, a client cannot present a key itself. Padded
    to API Gateway's minimum length."""
    return f"{name_prefix}.usage.{tenant_id}".ljust(USAGE_KEY_MIN_LENGTH, ".")


def usage_key_name(name_prefix: str, tenant_id: str) -> str:
    """The name of a tenant's API Gateway API key: how enrollment finds it again."""
    return f"{name_prefix}-tenant-{tenant_id}"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MintedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def valid_scopes(scopes: Iterable[str]) -> tuple[Scope, ...]:
    """`scopes` as a new key stores them (SCOPES' order, each once), or ConfigurationError: a key
    with no scope could do nothing, and a name that is not a scope (a typo, an old `emails:*` name)
    would silently grant less, or, for the old names, everything."""
    names = [str(scope).strip() for scope in scopes]
    unknown = sorted({name for name in names if name not in SCOPES})
    if unknown:
        raise ConfigurationError(f"unknown scope {', '.join(map(repr, unknown))}: the scopes are {', '.join(SCOPES)}")
    if not names:
        raise ConfigurationError(f"a key needs at least one scope of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in names)


def mint_api_key(
    tenants: TenantStore,
    clock: Clock,
    tenant_id: str,
    name: str = "",
    scopes: Iterable[str] | None = None,
) -> MintedKey:
    """A new key of `tenant_id` with `scopes` (None: every scope), stored as its hash; the secret is
    in the answer only. Scopes are validated before anything is stored."""
    granted = SCOPES if scopes is None else valid_scopes(scopes)
    key_id = new_id("key")
    raw = f"{KEY_PREFIX}{secrets.token_urlsafe(32)}"
    record = ApiKey(
        tenant_id=tenant_id,
        key_id=key_id,
        name=name,
        key_hash=hash_key(raw),
        prefix=raw[:10],
        scopes=granted,
        created_at=clock.now(),
    )
    tenants.put_api_key(record)
    return MintedKey(key=record, secret=raw)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("send the API key as `Authorization: Bearer <key>`")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send the API key as `Authorization: Bearer <key>`")
    return token.strip()


def authenticate(tenants: TenantStore, authorization: str | None) -> ApiKey:
    """The active key behind an Authorization header, or Unauthorized (never says which part failed)."""
    token = bearer_token(authorization)
    if not token.startswith(KEY_PREFIX) or len(token) > 200:
        raise Unauthorized("the API key is not valid")
    digest = hash_key(token)
    key = tenants.find_api_key(digest)
    if key is None or not key.active or not hmac.compare_digest(key.key_hash, digest):
        raise Unauthorized("the API key is not valid")
    return key
