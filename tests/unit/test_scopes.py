"""Key scopes on every route, through the real authorizer and the API over the fakes (issue 10, point 2).

The invariants: every authenticated operation needs exactly one scope of records.SCOPES; a key without
it gets a 403 naming that scope before anything else is read or done; a key with it passes the scope
check; a key stored with the old `emails:*` names has every scope; and no key reaches another tenant's
emails, messages, incoming mail, suppressions or domains. The tests walk the registered `Operations`,
so an operation added later is held to the same rules without being listed here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from petrel import resources
from petrel.api import openapi, routes
from petrel.api.app import ApiApplication
from petrel.api.routes import Operation
from petrel.entrypoints.api import create_api
from petrel.entrypoints.authorizer import create_authorizer
from petrel.models.inbound import InboundContent, InboundKind, InboundRecord, inbound_id, raw_digest
from petrel.models.records import SCOPES, Suppression
from petrel.observability import Telemetry, telemetry
from petrel.services.auth import mint_api_key
from tests.fakes import FakeWorld, Seeded, records
from tests.fakes.tenants import FakeTenantStore
from tests.unit.api_fakes import SCOPES as ALL_SCOPES
from tests.unit.api_fakes import Api, FakeApiContainer, LambdaContext, event

STAGE_ARN = "arn:aws:execute-api:us-east-1:000000000000:api123/api"
# The operations as the API registers them (domains' included once they are routed), built once.
OPERATIONS: list[Operation] = ApiApplication(FakeApiContainer(FakeWorld())).operations.all
AUTHENTICATED = [o for o in OPERATIONS if o.scope is not None]
# A bogus value for each path parameter: enough to route, never a stored item.
BOGUS = {"id": "x_01JD8X3Q4W5E6R7T8Y9V0W1X2P", "email": "nobody@example.org", "domain": "nothing.example"}
RAW = b"From: bob@example.org\r\nMessage-ID: <r1@example.org>\r\nSubject: hi\r\n\r\nHi\r\n"


def _name(operation: Operation) -> str:
    return f"{operation.method} {operation.rule}"


def _path(operation: Operation, values: dict[str, str]) -> str:
    return re.sub(r"<(\w+)>", lambda m: values[m.group(1)], operation.rule)


# --------------------------------------------------------------------------------- the route table


def test_each_scope_has_its_constant_and_its_description() -> None:
    constants = (routes.SEND, routes.READ, routes.DOMAINS, routes.SUPPRESSIONS, routes.INBOUND, routes.WEBHOOKS)
    assert constants == SCOPES
    assert tuple(openapi.SCOPE_TEXT) == SCOPES
    for scope in SCOPES:
        assert f"`{scope}`" in openapi.BEARER["bearer"]["description"]


def test_every_operation_needs_one_scope_and_only_the_documents_are_public() -> None:
    assert AUTHENTICATED, "no operation registered"
    for operation in OPERATIONS:
        if operation.scope is None:
            assert operation.method == "GET" and operation.rule in openapi.PUBLIC_PATHS, _name(operation)
        else:
            assert operation.scope in SCOPES, _name(operation)
    assert {o.rule for o in OPERATIONS if o.scope is None} == openapi.PUBLIC_PATHS


def _expected_scope(method: str, rule: str) -> str:
    """The scope policy, by path: sending and cancelling are `send`, reading emails and messages is
    `read`, and each other collection has the scope of its name."""
    family = rule.split("/")[2]
    if family in ("emails", "attachments"):
        return routes.READ if method == "GET" else routes.SEND
    if family == "messages":
        return routes.READ
    return {"suppressions": routes.SUPPRESSIONS, "inbound": routes.INBOUND, "domains": routes.DOMAINS}[family]


@pytest.mark.parametrize("operation", AUTHENTICATED, ids=_name)
def test_each_operation_needs_the_scope_of_its_collection(operation: Operation) -> None:
    assert operation.scope == _expected_scope(operation.method, operation.rule)


def test_the_send_scope_covers_sending_cancelling_and_attachments() -> None:
    needs = {(o.method, o.rule): o.scope for o in OPERATIONS}
    assert needs[("POST", "/v1/emails")] == needs[("POST", "/v1/emails/batch")] == "send"
    assert needs[("DELETE", "/v1/emails/<id>")] == needs[("POST", "/v1/attachments")] == "send"
    assert needs[("GET", "/v1/emails")] == needs[("GET", "/v1/emails/<id>")] == "read"
    assert needs[("GET", "/v1/messages/<id>")] == "read"
    assert needs[("POST", "/v1/inbound/raw")] == needs[("GET", "/v1/inbound")] == "inbound"
    assert needs[("DELETE", "/v1/suppressions/<email>")] == needs[("GET", "/v1/suppressions")] == "suppressions"


# ------------------------------------------------------------------------- keys through the authorizer


@dataclass
class _AuthorizerPorts:
    tenants: FakeTenantStore
    telemetry: Telemetry = field(default_factory=lambda: telemetry("authorizer"))
    usage_key_prefix: str = "petrel-test"


class Caller:
    """Requests as the gateway makes them: the real authorizer on the key, then the API with its context."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.api = create_api(FakeApiContainer(world))
        self.authorizer = create_authorizer(_AuthorizerPorts(world.tenants))

    def key(self, tenant_id: str, scopes: Sequence[str] | None = None) -> str:
        return mint_api_key(self.world.tenants, self.world.clock, tenant_id, scopes=scopes).secret

    def legacy_key(self, tenant_id: str, stored: tuple[str, ...] = ("emails:send", "emails:read")) -> str:
        """A key as it was stored before the scopes were split."""
        minted = mint_api_key(self.world.tenants, self.world.clock, tenant_id)
        self.world.tenants.put_api_key(minted.key.model_copy(update={"scopes": stored}))
        return minted.secret

    def __call__(
        self, secret: str, method: str, path: str, body: Any = None, media: str = "application/json"
    ) -> Response:
        request = {
            "type": "REQUEST",
            "methodArn": f"{STAGE_ARN}/{method}{path}",
            "headers": {"Authorization": f"Bearer {secret}"},
        }
        policy = self.authorizer(request, LambdaContext())
        assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"
        proxied = event(method, path, body, tenant_id=None, headers={"Content-Type": media})
        proxied["requestContext"]["authorizer"] = {**policy["context"], "principalId": policy["principalId"]}
        return Response(self.api(proxied, LambdaContext()))


@dataclass
class Response:
    raw: dict[str, Any]

    @property
    def status(self) -> int:
        return int(self.raw["statusCode"])

    @property
    def body(self) -> Any:
        return json.loads(self.raw["body"]) if self.raw["body"] else None

    @property
    def text(self) -> str:
        return str(self.raw["body"])


def _body(operation: Operation) -> Any:
    """A body `operation` could take (an empty JSON object, or a raw message), or none."""
    if not operation.takes_body:
        return None
    return RAW.decode() if operation.media != "application/json" else {}


def _request(caller: Caller, secret: str, operation: Operation, values: dict[str, str] = BOGUS) -> Response:
    """`operation` on `values`, with a body it could take."""
    return caller(secret, operation.method, _path(operation, values), _body(operation), operation.media)


def _nothing_done(world: FakeWorld) -> bool:
    """No job was queued, no incoming message pushed for ingest, no suppression added."""
    queued = any(world.queue.sent.values())
    return not queued and world.ingest_queue.drain() == [] and not world.suppressions.items


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed(domain="acme.example")


@pytest.fixture
def caller(world: FakeWorld) -> Caller:
    return Caller(world)


@pytest.mark.parametrize("operation", AUTHENTICATED, ids=_name)
def test_only_a_key_with_the_operations_scope_passes_its_scope_check(
    world: FakeWorld, caller: Caller, seeded: Seeded, operation: Operation
) -> None:
    tenant = seeded.tenant.tenant_id
    refused = f"this API key does not have the '{operation.scope}' scope"
    others = [scope for scope in SCOPES if scope != operation.scope]
    for scope in others:
        answer = _request(caller, caller.key(tenant, [scope]), operation)
        assert answer.status == 403, (scope, answer.raw)
        assert answer.raw["headers"]["Content-Type"] == "application/problem+json"
        assert answer.body["type"] == "urn:petrel:problem:forbidden" and answer.body["detail"] == refused
    every_other = _request(caller, caller.key(tenant, others), operation)
    assert every_other.status == 403 and every_other.body["detail"] == refused
    assert _nothing_done(world)  # a refused request did nothing

    for key in (caller.key(tenant, [str(operation.scope)]), caller.key(tenant), caller.legacy_key(tenant)):
        answer = _request(caller, key, operation)
        assert answer.status not in (401, 403), answer.raw  # a 404 or 422 for a bogus id or body is fine


@pytest.mark.parametrize("stored", [("emails:send", "emails:read"), ("emails:read",), ("emails:send",)])
def test_a_key_stored_before_the_scopes_were_split_reaches_every_route(
    caller: Caller, seeded: Seeded, stored: tuple[str, ...]
) -> None:
    secret = caller.legacy_key(seeded.tenant.tenant_id, stored)
    for operation in AUTHENTICATED:
        answer = _request(caller, secret, operation)
        assert answer.status not in (401, 403), (_name(operation), answer.raw)


def test_a_scope_refusal_comes_before_the_body_and_the_idempotency_key(world: FakeWorld, caller: Caller) -> None:
    seeded = world.seed(domain="acme.example")
    tenant = seeded.tenant.tenant_id
    email = {"from": "jane@acme.example", "to": ["bob@example.org"], "subject": "Hi", "text": "x"}
    read_only = caller.key(tenant, ["read"])

    for body in (email, "{", {"to": "x"}):
        answer = caller(read_only, "POST", "/v1/emails", body)
        assert answer.status == 403 and answer.body["detail"] == "this API key does not have the 'send' scope"
    proxied = caller(read_only, "POST", "/v1/emails", email)  # and again: nothing was kept or queued
    assert proxied.status == 403
    assert world.messages.emails == {} and world.idempotency.items == {} and _nothing_done(world)


def test_an_authorizer_answer_cached_with_the_old_names_still_grants_every_scope(
    world: FakeWorld, seeded: Seeded
) -> None:
    """API Gateway caches the authorizer's context per key: for a while after a deployment the API may
    be handed `emails:send emails:read` from the authorizer that ran before it."""
    api = Api(world)
    tenant = seeded.tenant.tenant_id
    for operation in AUTHENTICATED:
        request = event(
            operation.method,
            _path(operation, BOGUS),
            _body(operation),
            tenant_id=tenant,
            scopes="emails:send emails:read",
            headers={"Content-Type": operation.media},
        )
        assert api(request)["statusCode"] not in (401, 403), _name(operation)
    unknown = event("GET", "/v1/emails", tenant_id=tenant, scopes="admin emails:write *")
    assert api(unknown)["statusCode"] == 403


def test_every_scope_is_in_a_full_keys_context(world: FakeWorld, caller: Caller, seeded: Seeded) -> None:
    secret = caller.key(seeded.tenant.tenant_id)
    request = {
        "type": "REQUEST",
        "methodArn": f"{STAGE_ARN}/GET/v1/emails",
        "headers": {"Authorization": f"Bearer {secret}"},
    }
    assert caller.authorizer(request, LambdaContext())["context"]["scopes"] == ALL_SCOPES == " ".join(SCOPES)


# ------------------------------------------------------------------------------------ isolation


@dataclass
class Owned:
    """What one tenant owns, by the value of each path parameter that names it."""

    tenant_id: str
    email_id: str
    message_id: str
    address: str
    inbound_id: str
    domain: str

    def values(self, operation: Operation) -> dict[str, str]:
        """The path values that name this tenant's item in `operation`."""
        family = operation.rule.split("/")[2]
        by_family = {"emails": self.email_id, "messages": self.message_id, "inbound": self.inbound_id}
        return {"id": by_family.get(family, ""), "email": self.address, "domain": self.domain}

    @property
    def markers(self) -> tuple[str, ...]:
        """Strings that appear in an answer only when it shows one of this tenant's items."""
        return (self.email_id, self.message_id, self.address, self.inbound_id, self.domain)


def _own(world: FakeWorld, tenant_id: str, label: str, domain: str) -> Owned:
    """An email (one message), a suppression and an incoming message of `tenant_id`, stored directly."""
    email, messages = records.email(tenant_id, (f"{label}-rcpt@example.org",), from_address=f"jane@{domain}")
    world.messages.create_email(email, messages, expires_at=0)
    address = f"{label}-suppressed@example.org"
    world.suppressions.add(
        Suppression(tenant_id=tenant_id, email=address, reason="manual", created_at=world.clock.now())
    )
    header_id = f"<{label}@example.org>"
    raw = f"Message-ID: {header_id}\r\n\r\n{label}\r\n".encode()
    found = inbound_id(tenant_id, header_id, raw)
    record = InboundRecord(
        tenant_id=tenant_id,
        inbound_id=found,
        kind=InboundKind.MESSAGE,
        received_at=world.clock.now(),
        source="imap",
        mailbox=f"bounces@{domain}",
        from_=f"{label}-sender@example.org",
        to=(f"bounces@{domain}",),
        subject=label,
        message_id=header_id,
        raw_key=resources.inbound_raw_key(tenant_id, found),
        size=len(raw),
        digest=raw_digest(raw),
    )
    world.inbound.create_inbound(record, InboundContent(text=label), expires_at=0)
    return Owned(tenant_id, email.email_id, messages[0].message_id, address, found, domain)


@pytest.fixture
def two_tenants(world: FakeWorld, seeded: Seeded) -> tuple[Owned, Owned]:
    acme = _own(world, seeded.tenant.tenant_id, "acme", seeded.domain.domain)
    beta_tenant = records.tenant("Beta")
    world.tenants.put_tenant(beta_tenant)
    world.tenants.put_domain(records.domain(beta_tenant.tenant_id, "beta.example"))
    return acme, _own(world, beta_tenant.tenant_id, "beta", "beta.example")


def _by_id(operation: Operation) -> bool:
    return "<" in operation.rule


def _read_back(caller: Caller, secret: str, owned: Owned) -> list[int]:
    """The status of each GET of one of `owned`'s items, with its own key."""
    reads = [o for o in AUTHENTICATED if o.method == "GET" and _by_id(o)]
    return [_request(caller, secret, o, owned.values(o)).status for o in reads]


def test_another_tenants_key_gets_a_404_for_each_item_by_id_and_changes_nothing(
    caller: Caller, two_tenants: tuple[Owned, Owned]
) -> None:
    acme, beta = two_tenants
    acme_key, beta_key = caller.key(acme.tenant_id), caller.key(beta.tenant_id)
    assert set(_read_back(caller, acme_key, acme)) == {200}

    by_id = [o for o in AUTHENTICATED if _by_id(o)]
    assert {o.rule.split("/")[2] for o in by_id} >= {"emails", "messages", "suppressions", "inbound"}
    for operation in by_id:
        path = _path(operation, acme.values(operation))
        answer = _request(caller, beta_key, operation, acme.values(operation))
        assert answer.status == 404, (_name(operation), answer.raw)
        assert not any(marker in answer.text for marker in acme.markers if marker not in path), answer.raw

    assert set(_read_back(caller, acme_key, acme)) == {200}  # nothing of acme's was cancelled or removed
    message = caller(acme_key, "GET", f"/v1/messages/{acme.message_id}")
    assert message.body["status"] == "queued"
    assert set(_read_back(caller, beta_key, beta)) == {200}


def test_lists_never_include_another_tenants_items(caller: Caller, two_tenants: tuple[Owned, Owned]) -> None:
    acme, beta = two_tenants
    acme_key, beta_key = caller.key(acme.tenant_id), caller.key(beta.tenant_id)
    lists = [o for o in AUTHENTICATED if o.method == "GET" and not _by_id(o)]
    assert {o.rule for o in lists} >= {"/v1/emails", "/v1/suppressions", "/v1/inbound"}
    for operation in lists:
        theirs, ours = _request(caller, beta_key, operation), _request(caller, acme_key, operation)
        assert theirs.status == ours.status == 200, (_name(operation), theirs.raw, ours.raw)
        assert theirs.body["data"] and ours.body["data"], _name(operation)
        assert not any(marker in theirs.text for marker in acme.markers), _name(operation)
        assert not any(marker in ours.text for marker in beta.markers), _name(operation)
        assert any(marker in ours.text for marker in acme.markers), _name(operation)
