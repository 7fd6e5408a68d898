"""services.auth and the authorizer handler over the fakes: minted keys authenticate, everything else is
Unauthorized; only hashes are stored."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from petrel.entrypoints.authorizer import create_authorizer
from petrel.errors import ConfigurationError, Unauthorized
from petrel.models.records import SCOPES
from petrel.observability import Telemetry, telemetry
from petrel.services.auth import (
    KEY_PREFIX,
    USAGE_KEY_MIN_LENGTH,
    authenticate,
    bearer_token,
    hash_key,
    mint_api_key,
    usage_key,
    valid_scopes,
)
from tests.fakes import FakeWorld
from tests.fakes.tenants import FakeTenantStore
from tests.unit.api_fakes import LambdaContext


def test_a_minted_key_authenticates(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a", "ci")

    key = authenticate(world.tenants, f"Bearer {minted.secret}")

    assert key.tenant_id == "tn_a" and key.key_id == minted.key.key_id
    assert key.scopes == SCOPES == key.granted  # no scopes named: every scope
    assert minted.secret.startswith(KEY_PREFIX) and key.prefix == minted.secret[:10]
    assert key.created_at == world.clock.now()


def test_scheme_is_case_insensitive_and_spaces_are_tolerated(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a")
    assert authenticate(world.tenants, f"  bearer   {minted.secret}  ").key_id == minted.key.key_id


def test_custom_scopes(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a", scopes=("read",))
    assert authenticate(world.tenants, f"Bearer {minted.secret}").scopes == ("read",)


def test_scopes_are_stored_once_each_in_their_canonical_order(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a", scopes=["inbound", "send", " send ", "domains"])
    assert minted.key.scopes == ("send", "domains", "inbound")
    [stored] = world.tenants.list_api_keys("tn_a")
    assert stored.scopes == ("send", "domains", "inbound") == stored.granted


@pytest.mark.parametrize(
    ("scopes", "named"),
    [
        ((), "at least one scope"),
        (("send", "sned"), "'sned'"),
        (("emails:send",), "'emails:send'"),  # the old names are read, never minted: they grant everything
        (("read", "admin", "*"), "'*', 'admin'"),
        (("",), "''"),
    ],
)
def test_a_key_is_never_minted_with_scopes_that_are_not_a_non_empty_subset(
    world: FakeWorld, scopes: tuple[str, ...], named: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        mint_api_key(world.tenants, world.clock, "tn_a", scopes=scopes)
    assert named in str(caught.value)
    assert world.tenants.list_api_keys("tn_a") == []  # refused before anything is stored


def test_valid_scopes_accepts_each_scope_alone_and_all_together() -> None:
    for scope in SCOPES:
        assert valid_scopes([scope]) == (scope,)
    assert valid_scopes(reversed(SCOPES)) == SCOPES


def test_only_the_hash_is_stored(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a")

    [stored] = world.tenants.list_api_keys("tn_a")
    assert stored.key_hash == hash_key(minted.secret) != minted.secret
    assert minted.secret not in stored.model_dump_json()
    assert minted.secret[len(KEY_PREFIX) :] not in stored.model_dump_json()


def test_keys_are_random(world: FakeWorld) -> None:
    secrets = {mint_api_key(world.tenants, world.clock, "tn_a").secret for _ in range(20)}
    assert len(secrets) == 20 and all(len(s) > 40 for s in secrets)


def test_a_wrong_key_is_refused(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a")
    with pytest.raises(Unauthorized):
        authenticate(world.tenants, f"Bearer {minted.secret[:-1]}x")
    with pytest.raises(Unauthorized):
        authenticate(world.tenants, f"Bearer {KEY_PREFIX}{'a' * 43}")


def test_a_revoked_key_is_refused(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a")
    world.tenants.revoke_api_key("tn_a", minted.key.key_id, world.clock.now())

    with pytest.raises(Unauthorized):
        authenticate(world.tenants, f"Bearer {minted.secret}")


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Token ptl_abc",
        "ptl_abcdef",  # no scheme
        "Bearer not-a-petrel-key",
        "Bearer ptl_" + "a" * 300,  # too long to bother hashing
    ],
)
def test_malformed_headers_are_refused(world: FakeWorld, header: str | None) -> None:
    mint_api_key(world.tenants, world.clock, "tn_a")
    with pytest.raises(Unauthorized) as caught:
        authenticate(world.tenants, header)
    assert caught.value.status == 401


def test_refusals_do_not_say_which_part_failed(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a")
    world.tenants.revoke_api_key("tn_a", minted.key.key_id, world.clock.now())
    details = set()
    for header in (f"Bearer {minted.secret}", f"Bearer {KEY_PREFIX}unknown", "Bearer nope"):
        with pytest.raises(Unauthorized) as caught:
            authenticate(world.tenants, header)
        details.add(caught.value.detail)
    assert details == {"the API key is not valid"}


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    with pytest.raises(Unauthorized):
        bearer_token("Bearer")


@dataclass
class _AuthorizerPorts:
    tenants: FakeTenantStore
    telemetry: Telemetry = field(default_factory=lambda: telemetry("authorizer"))
    usage_key_prefix: str = "petrel-test"


def _authorize(world: FakeWorld, header: str | None) -> dict[str, Any]:
    handler = create_authorizer(_AuthorizerPorts(world.tenants))
    event = {
        "type": "REQUEST",
        "methodArn": "arn:aws:execute-api:us-east-1:000000000000:api123/api/POST/v1/emails",
        "headers": {"Authorization": header} if header is not None else {},
    }
    result: dict[str, Any] = handler(event, LambdaContext())
    return result


def test_the_authorizer_allows_a_key_on_every_route_of_its_stage(world: FakeWorld) -> None:
    minted = mint_api_key(world.tenants, world.clock, "tn_a", scopes=("read", "domains"))

    policy = _authorize(world, f"Bearer {minted.secret}")

    [statement] = policy["policyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Resource"] == "arn:aws:execute-api:us-east-1:000000000000:api123/api/*"
    assert policy["context"] == {"tenant_id": "tn_a", "key_id": minted.key.key_id, "scopes": "read domains"}
    assert minted.secret not in json.dumps(policy)
    # API Gateway throttles the request by the usage plan this key (the tenant's, not the API key's) is in.
    assert policy["usageIdentifierKey"] == usage_key("petrel-test", "tn_a")


def test_a_usage_key_is_the_tenants_own_and_long_enough_for_api_gateway() -> None:
    keys = {usage_key("petrel-dev", tenant) for tenant in ("tn_a", "tn_b")}
    assert len(keys) == 2
    assert all(len(key) >= USAGE_KEY_MIN_LENGTH for key in keys)
    assert usage_key("petrel-dev", "tn_a") != usage_key("petrel-prod", "tn_a")
    assert usage_key("p1", "t") == usage_key("p1", "t")  # deterministic: the authorizer computes it
    assert len(usage_key("ab", "t")) == USAGE_KEY_MIN_LENGTH


@pytest.mark.parametrize("stored", [("emails:send", "emails:read"), ("emails:read",), ("emails:send",)])
def test_a_key_stored_with_the_old_scope_names_is_given_every_scope(world: FakeWorld, stored: tuple[str, ...]) -> None:
    """Keys made before the scopes were split keep working on every route: the authorizer puts the
    scopes the key is granted in its context, not the names it was stored with."""
    minted = mint_api_key(world.tenants, world.clock, "tn_a")
    world.tenants.put_api_key(minted.key.model_copy(update={"scopes": stored}))

    policy = _authorize(world, f"Bearer {minted.secret}")

    assert policy["context"]["scopes"] == " ".join(SCOPES)


@pytest.mark.parametrize("header", [None, "Bearer ptl_unknown", "Basic eDp5"])
def test_the_authorizer_answers_unauthorized(world: FakeWorld, header: str | None) -> None:
    mint_api_key(world.tenants, world.clock, "tn_a")
    with pytest.raises(Exception, match=r"^Unauthorized$"):
        _authorize(world, header)
