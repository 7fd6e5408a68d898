"""The admin API (petrel.api.admin) on the in-memory fakes, called as Lambda calls it.

What must always hold, and what each test would break:
- an answer never holds a password, a key's hash or a secret's name (every body is searched for them);
- a refusal writes nothing: a rotated password the server does not take leaves the old one stored;
- unknown tenant/server/key/mailbox/domain is a 404 problem, a ConfigurationError a 422 with its line,
  a domain another tenant has a 409, a body that is not JSON a 400;
- PATCH changes only what the body names (a quota sent as null is removed, one left out is kept);
- each request leaves one access-log line naming the caller's ARN, and none of its body.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pytest

from petrel.entrypoints.admin_api import create_admin_api
from petrel.errors import ConfigurationError
from petrel.models.admin import Step
from petrel.models.records import SendingDomain, SmtpServer
from petrel.observability import Telemetry, telemetry
from petrel.services.domains import DomainDeps
from petrel.services.mailboxes import MailboxDeps
from petrel.services.tenants import AdminDeps
from tests.fakes.dns import FakeResolver
from tests.fakes.imap import FakeImapServer
from tests.fakes.usage_plans import FakeUsagePlans
from tests.fakes.world import FakeWorld

CALLER = "arn:aws:iam::123456789012:user/ops"


class LambdaContext:
    function_name = "petrel-admin-api"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:petrel-admin-api"
    aws_request_id = "req-1"


PREFIX = "petrel-test/tenants/"
PLANS = {"standard": "up-standard", "bulk": "up-bulk"}  # plan name -> usage plan id


@dataclass
class FakeSmtp:
    """An SMTP check against servers whose accepted password is known (host -> password)."""

    passwords: dict[str, str] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)  # the hosts checked

    def __call__(
        self, server: SmtpServer, password: str, mail_from: str, report: Callable[[Step], None]
    ) -> Step | None:
        self.tried.append(server.host)
        if server.host not in self.passwords:
            failed = Step("connect", False, f"{server.host}:{server.port}: connection refused")
            report(failed)
            return failed
        report(Step("connect", True, f"{server.host}:{server.port}: 220 ready"))
        if self.passwords[server.host] != password:
            failed = Step("auth", False, f"as {server.username}: 535 5.7.8 authentication failed")
            report(failed)
            return failed
        report(Step("auth", True, f"as {server.username}: 235 ok"))
        report(Step("mail from", True, f"<{mail_from}>: 250 ok"))
        return None


@dataclass
class FakeAdminApiContainer:
    """petrel.api.admin.AdminApiPorts, each the world's fake."""

    world: FakeWorld
    resolver: FakeResolver = field(default_factory=FakeResolver)
    smtp: FakeSmtp = field(default_factory=FakeSmtp)
    imap: FakeImapServer = field(default_factory=FakeImapServer)
    telemetry: Telemetry = field(default_factory=lambda: telemetry("admin-api"))
    usage_plans: FakeUsagePlans = field(default_factory=lambda: FakeUsagePlans(tuple(PLANS.values())))

    @property
    def tenants(self) -> Any:
        return self.world.tenants

    @property
    def clock(self) -> Any:
        return self.world.clock

    @property
    def messages(self) -> Any:
        return self.world.messages

    @property
    def queue(self) -> Any:
        return self.world.queue

    @property
    def smtp_check(self) -> Any:
        return self.smtp

    @property
    def mailbox_reader(self) -> Any:
        return self.imap

    @cached_property
    def admin(self) -> AdminDeps:
        return AdminDeps(
            tenants=self.world.tenants,
            secrets=self.world.secrets,
            clock=self.world.clock,
            secrets_prefix=PREFIX,
            max_age_hours_limit=48,
            api_plans=PLANS,
            usage_plans=self.usage_plans,
            usage_key_prefix="petrel-test",
        )

    @cached_property
    def mailbox_admin(self) -> MailboxDeps:
        w = self.world
        return MailboxDeps(
            tenants=w.tenants, mailboxes=w.mailboxes, secrets=w.secrets, clock=w.clock, secrets_prefix=PREFIX
        )

    @cached_property
    def domains(self) -> DomainDeps:
        w = self.world
        return DomainDeps(
            tenants=w.tenants,
            secrets=w.secrets,
            resolver=self.resolver,
            clock=w.clock,
            secrets_prefix=PREFIX,
            mailboxes=w.mailboxes,
        )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class AdminApi:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.container = FakeAdminApiContainer(world)
        self.handler = create_admin_api(self.container)
        self.answers: list[Answer] = []

    def __call__(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, query: dict[str, str] | None = None
    ) -> Answer:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
        event = {
            "resource": "/v1/admin/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": {"Content-Type": "application/json"},
            "queryStringParameters": query,
            "pathParameters": {"proxy": path.removeprefix("/v1/admin/")},
            # as the gateway (and the local front) hands it over: base64
            "body": base64.b64encode(data).decode() if data else None,
            "isBase64Encoded": bool(data),
            "requestContext": {"requestId": "req-1", "stage": "api", "identity": {"userArn": CALLER}},
        }
        result = self.handler(event, LambdaContext())
        answer = Answer(int(result["statusCode"]), dict(result["headers"]), str(result.get("body") or ""))
        self.answers.append(answer)
        return answer

    def tenant(self, **fields: Any) -> str:
        answer = self("POST", "/v1/admin/tenants", {"name": "Acme", **fields})
        assert answer.status == 201, answer
        tenant_id: str = answer.json()["tenant_id"]
        return tenant_id


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld()


@pytest.fixture
def api(world: FakeWorld) -> AdminApi:
    return AdminApi(world)


def problem(answer: Answer, status: int) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["status"] == status
    return body


def no_secret_in_answers(api: AdminApi, *secrets: str) -> None:
    for answer in api.answers:
        for secret in secrets:
            assert secret not in answer.text
        assert "secret_name" not in answer.text and "key_hash" not in answer.text


# -- tenants -----------------------------------------------------------------------------------


TENANT_FIELDS = {
    "tenant_id",
    "name",
    "created_at",
    "max_message_bytes",
    "max_age_hours",
    "daily_quota",
    "per_second_quota",
    "allow_unverified_domains",
    "suspended_at",
    "suspended_reason",
    "status",
    "api_plan",
    "send_rate_per_second",
}


def test_a_tenant_is_created_shown_and_listed(api: AdminApi, world: FakeWorld) -> None:
    created = api("POST", "/v1/admin/tenants", {"name": "Acme", "daily_quota": 1000, "max_age_hours": 12})
    assert created.status == 201
    view = created.json()
    assert set(view) == TENANT_FIELDS
    assert (view["name"], view["daily_quota"], view["per_second_quota"], view["max_age_hours"]) == (
        "Acme",
        1000,
        None,
        12,
    )
    assert view["status"] == "active"
    stored = world.tenants.get_tenant(view["tenant_id"])
    assert stored is not None and stored.daily_quota == 1000
    assert api("GET", f"/v1/admin/tenants/{view['tenant_id']}").json() == view
    assert api("GET", "/v1/admin/tenants").json() == {"tenants": [view]}


def test_patch_changes_only_what_the_body_names_and_null_removes_a_quota(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant(daily_quota=100, per_second_quota=5)
    renamed = api("PATCH", f"/v1/admin/tenants/{tenant_id}", {"name": "Acme Ltd"}).json()
    assert (renamed["name"], renamed["daily_quota"], renamed["per_second_quota"]) == ("Acme Ltd", 100, 5)
    lifted = api("PATCH", f"/v1/admin/tenants/{tenant_id}", {"daily_quota": None, "allow_unverified_domains": True})
    assert lifted.status == 200
    assert (lifted.json()["daily_quota"], lifted.json()["per_second_quota"]) == (None, 5)
    stored = world.tenants.get_tenant(tenant_id)
    assert stored is not None and stored.daily_quota is None and stored.allow_unverified_domains


def test_refusals_are_problems_and_store_nothing(api: AdminApi, world: FakeWorld) -> None:
    too_old = problem(api("POST", "/v1/admin/tenants", {"name": "Acme", "max_age_hours": 500}), 422)
    assert "max age hours must be between 1 and 48" in too_old["detail"]
    unknown_field = problem(api("POST", "/v1/admin/tenants", {"name": "Acme", "quota": 3}), 422)
    assert unknown_field["errors"][0]["pointer"] == "/quota"
    problem(api("POST", "/v1/admin/tenants", raw=b"{not json"), 400)
    problem(api("POST", "/v1/admin/tenants", {"name": "Acme", "daily_quota": 0}), 422)
    assert world.tenants.list_tenants() == []
    missing = problem(api("GET", "/v1/admin/tenants/tn_nobody"), 404)
    assert "tn_nobody" in missing["detail"]
    problem(api("PATCH", "/v1/admin/tenants/tn_nobody", {"name": "x"}), 404)
    problem(api("GET", "/v1/admin/nothing-here"), 404)


def test_suspend_then_resume(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    suspended = api("POST", f"/v1/admin/tenants/{tenant_id}/suspend", {"reason": "unpaid invoice"}).json()
    assert (suspended["status"], suspended["suspended_reason"]) == ("suspended", "unpaid invoice")
    assert suspended["suspended_at"] is not None
    stored = world.tenants.get_tenant(tenant_id)
    assert stored is not None and stored.suspended
    again = api("POST", f"/v1/admin/tenants/{tenant_id}/suspend")  # no body: the first suspension stands
    assert again.status == 200 and again.json()["suspended_at"] == suspended["suspended_at"]
    resumed = api("POST", f"/v1/admin/tenants/{tenant_id}/resume").json()
    assert resumed["released"] == 0 and resumed["tenant"]["status"] == "active"
    stored = world.tenants.get_tenant(tenant_id)
    assert stored is not None and not stored.suspended
    problem(api("POST", "/v1/admin/tenants/tn_nobody/resume"), 404)


# -- API keys ----------------------------------------------------------------------------------


def test_a_key_is_shown_once_with_its_scopes_and_listed_without_its_hash(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    created = api("POST", f"/v1/admin/tenants/{tenant_id}/keys", {"name": "ci", "scopes": ["read"]})
    assert created.status == 201
    key = created.json()
    assert set(key) == {"key_id", "api_key", "prefix", "name", "scopes", "created_at"}
    assert key["api_key"].startswith("ptl_") and key["api_key"].startswith(key["prefix"])
    assert key["scopes"] == ["read"]
    everything = api("POST", f"/v1/admin/tenants/{tenant_id}/keys").json()  # no body: every scope
    assert everything["scopes"] == ["send", "read", "domains", "suppressions", "inbound", "webhooks"]
    listed = api("GET", f"/v1/admin/tenants/{tenant_id}/keys").json()["keys"]
    assert {k["key_id"] for k in listed} == {key["key_id"], everything["key_id"]}
    assert all(set(k) == {"key_id", "prefix", "name", "scopes", "created_at", "revoked_at"} for k in listed)
    by_prefix = api("GET", f"/v1/admin/tenants/{tenant_id}/keys", query={"prefix": key["prefix"]}).json()["keys"]
    assert [k["key_id"] for k in by_prefix] == [key["key_id"]]
    hashes = [k.key_hash for k in world.tenants.list_api_keys(tenant_id)]
    no_secret_in_answers(api, *hashes)
    assert key["api_key"] not in api.answers[-1].text


def test_a_key_with_an_unknown_scope_is_refused(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    problem(api("POST", f"/v1/admin/tenants/{tenant_id}/keys", {"scopes": ["emails:send"]}), 422)
    problem(api("POST", f"/v1/admin/tenants/{tenant_id}/keys", {"scopes": []}), 422)
    assert world.tenants.list_api_keys(tenant_id) == []
    problem(api("POST", "/v1/admin/tenants/tn_nobody/keys", {}), 404)


def test_revoking_is_idempotent_and_keeps_the_first_time(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    key_id = api("POST", f"/v1/admin/tenants/{tenant_id}/keys", {}).json()["key_id"]
    first = api("DELETE", f"/v1/admin/tenants/{tenant_id}/keys/{key_id}")
    assert first.status == 200 and first.json()["key_id"] == key_id
    world.clock.advance(60)
    second = api("DELETE", f"/v1/admin/tenants/{tenant_id}/keys/{key_id}")
    assert second.json() == first.json()
    [stored] = world.tenants.list_api_keys(tenant_id)
    assert stored.revoked_at is not None
    problem(api("DELETE", f"/v1/admin/tenants/{tenant_id}/keys/key_nope"), 404)


# -- SMTP servers ------------------------------------------------------------------------------


def add_server(api: AdminApi, tenant_id: str, password: str = "old-secret", **fields: Any) -> dict[str, Any]:
    body = {"host": "mail.acme.test", "username": "relay@acme.test", "password": password, **fields}
    answer = api("POST", f"/v1/admin/tenants/{tenant_id}/servers", body)
    assert answer.status == 201, answer
    view: dict[str, Any] = answer.json()
    return view


def secret_of(world: FakeWorld, tenant_id: str, server_id: str) -> str:
    [server] = [s for s in world.tenants.list_servers(tenant_id) if s.server_id == server_id]
    return world.secrets.get_secret(server.secret_name)


def test_a_server_is_added_changed_paused_and_removed_without_its_password_showing(
    api: AdminApi, world: FakeWorld
) -> None:
    tenant_id = api.tenant()
    server = add_server(api, tenant_id, security="tls")
    assert server["port"] == 465 and server["enabled"] and "password" not in server
    server_id = server["server_id"]
    assert secret_of(world, tenant_id, server_id) == "old-secret"
    changed = api("PATCH", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}", {"weight": 5, "pool": "bulk"}).json()
    assert (changed["weight"], changed["pool"], changed["host"]) == (5, "bulk", "mail.acme.test")
    problem(api("PATCH", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}", {"port": 25}), 422)
    problem(api("PATCH", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}", {}), 422)
    paused = api("POST", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/pause").json()
    assert paused["enabled"] is False
    assert not world.tenants.list_servers(tenant_id)[0].enabled
    assert api("POST", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/resume").json()["enabled"] is True
    assert api("GET", f"/v1/admin/tenants/{tenant_id}/servers").json()["servers"][0]["weight"] == 5
    removed = api("DELETE", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}")
    assert (removed.status, removed.text) == (204, "")
    assert world.tenants.list_servers(tenant_id) == [] and world.secrets.secrets == {}
    problem(api("DELETE", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}"), 404)
    no_secret_in_answers(api, "old-secret")


def test_a_rotated_password_is_stored_only_once_the_server_takes_it(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    server_id = add_server(api, tenant_id)["server_id"]
    path = f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/password"
    api.container.smtp.passwords["mail.acme.test"] = "new-secret"  # set on the server first
    refused = problem(api("PUT", path, {"password": "typo-secret"}), 422)
    assert "not stored" in refused["detail"] and "535" in refused["detail"]
    assert secret_of(world, tenant_id, server_id) == "old-secret"
    refused_twice = problem(api("PUT", path, {"password": "typo-secret", "verify": True}), 422)
    assert refused_twice["detail"] == refused["detail"]
    assert secret_of(world, tenant_id, server_id) == "old-secret"
    assert api("PUT", path, {"password": "new-secret"}).status == 200
    assert secret_of(world, tenant_id, server_id) == "new-secret"
    no_secret_in_answers(api, "old-secret", "new-secret", "typo-secret")


def test_an_unreachable_server_keeps_its_password_unless_verify_is_off(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    server_id = add_server(api, tenant_id)["server_id"]
    path = f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/password"
    problem(api("PUT", path, {"password": "new-secret"}), 422)  # connect refused: not verified, not stored
    assert secret_of(world, tenant_id, server_id) == "old-secret"
    assert api("PUT", path, {"password": "new-secret", "verify": False}).status == 200
    assert secret_of(world, tenant_id, server_id) == "new-secret"
    assert api.container.smtp.tried == ["mail.acme.test"]  # verify false tries nothing


def test_a_server_test_reports_each_step(api: AdminApi) -> None:
    tenant_id = api.tenant()
    server_id = add_server(api, tenant_id)["server_id"]
    api.container.smtp.passwords["mail.acme.test"] = "old-secret"
    check = api("POST", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/test").json()
    assert check["ok"] is True and [s["name"] for s in check["steps"]] == ["connect", "auth", "mail from"]
    api.container.smtp.passwords["mail.acme.test"] = "changed-on-the-server"
    check = api("POST", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/test").json()
    assert check["ok"] is False and check["steps"][-1]["name"] == "auth"


# -- mailboxes ---------------------------------------------------------------------------------


def with_domain(world: FakeWorld, tenant_id: str, domain: str = "acme.test") -> None:
    world.tenants.create_domain(
        SendingDomain(tenant_id=tenant_id, domain=domain, return_path_domain=domain, created_at=world.clock.now())
    )


def test_a_mailbox_is_added_shown_changed_tested_and_removed(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    with_domain(world, tenant_id)
    base = f"/v1/admin/tenants/{tenant_id}/mailboxes"
    created = api("POST", base, {"address": "bounces@acme.test", "host": "imap.acme.test", "password": "imap-secret"})
    assert created.status == 201
    box = created.json()
    assert (box["port"], box["folders"], box["username"], box["health"]) == (993, ["INBOX"], "bounces@acme.test", None)
    mailbox_id = box["mailbox_id"]
    assert api("GET", f"{base}/{mailbox_id}").json()["cursors"] == {"INBOX": None}
    changed = api("PATCH", f"{base}/{mailbox_id}", {"after": "move", "move_to": "Done", "folders": ["INBOX", "Spam"]})
    assert changed.status == 200
    assert (changed.json()["after"], changed.json()["move_to"], changed.json()["folders"]) == (
        "move",
        "Done",
        ["INBOX", "Spam"],
    )
    problem(api("PATCH", f"{base}/{mailbox_id}", {"move_to": "INBOX"}), 422)
    api.container.imap.account("imap.acme.test", "bounces@acme.test", "imap-new")
    failed = api("POST", f"{base}/{mailbox_id}/test").json()
    assert failed["ok"] is False and failed["steps"][-1]["name"] == "login"
    assert api("PUT", f"{base}/{mailbox_id}/password", {"password": "imap-new"}).status == 200
    passed = api("POST", f"{base}/{mailbox_id}/test").json()
    assert [f["name"] for f in passed["folders"]] == ["select", "select"]
    assert passed["folders"][0]["ok"] is True
    listed = api("GET", base).json()["mailboxes"]
    assert [m["mailbox_id"] for m in listed] == [mailbox_id]
    assert api("DELETE", f"{base}/{mailbox_id}").status == 204
    assert world.mailboxes.list_mailboxes(tenant_id) == [] and world.secrets.secrets == {}
    problem(api("GET", f"{base}/{mailbox_id}"), 404)
    no_secret_in_answers(api, "imap-secret", "imap-new")


def test_a_mailbox_off_the_tenants_domains_is_refused(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()
    body = {"address": "me@gmail.example", "host": "imap.acme.test", "password": "imap-secret"}
    refused = problem(api("POST", f"/v1/admin/tenants/{tenant_id}/mailboxes", body), 422)
    assert "gmail.example is not a domain of tenant" in refused["detail"]
    assert world.secrets.secrets == {} and world.mailboxes.list_mailboxes(tenant_id) == []


# -- domains -----------------------------------------------------------------------------------


def test_domains_for_any_tenant_and_one_tenant_per_domain(api: AdminApi, world: FakeWorld) -> None:
    acme, other = api.tenant(), api.tenant()
    add_server(api, acme)
    created = api("POST", f"/v1/admin/tenants/{acme}/domains", {"domain": "Acme.Test"})
    assert created.status == 201
    view = created.json()
    assert view["domain"] == "acme.test" and view["status"] == "pending"
    assert {r["purpose"] for r in view["records"]} >= {"spf", "dkim", "dmarc"}
    assert api("GET", f"/v1/admin/tenants/{acme}/domains").json() == {"domains": [view]}
    assert api("GET", f"/v1/admin/tenants/{acme}/domains/acme.test").json() == view
    assert api("GET", "/v1/admin/domains/acme.test").json() == view  # found without its tenant
    problem(api("POST", f"/v1/admin/tenants/{other}/domains", {"domain": "acme.test", "spf": ["a:mx.other.test"]}), 409)
    problem(api("GET", "/v1/admin/domains/nobody.test"), 404)
    problem(api("GET", f"/v1/admin/tenants/{other}/domains/acme.test"), 404)
    verified = api("POST", f"/v1/admin/tenants/{acme}/domains/acme.test/verify").json()
    assert verified["status"] == "pending" and verified["checked_at"] is not None
    private_keys = [v for v in world.secrets.secrets.values() if "PRIVATE KEY" in v]
    assert private_keys
    no_secret_in_answers(api, *private_keys, "PRIVATE KEY")
    assert api("DELETE", f"/v1/admin/tenants/{acme}/domains/acme.test").status == 204
    assert world.tenants.find_domain("acme.test") is None
    assert not any("PRIVATE KEY" in v for v in world.secrets.secrets.values())


# -- the access log ----------------------------------------------------------------------------


def test_each_request_is_logged_with_its_caller_and_without_its_body(
    api: AdminApi, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_id = api.tenant()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="petrel-admin-api"):
        add_server(api, tenant_id, password="never-logged-secret")
    [access] = [r for r in caplog.records if r.getMessage() == "admin request"]
    fields = vars(access)
    assert (fields["caller"], fields["status"], fields["method"]) == (CALLER, 201, "POST")
    assert fields["path"] == f"/v1/admin/tenants/{tenant_id}/servers"
    assert not any("never-logged-secret" in repr(vars(record)) for record in caplog.records)


def test_a_route_that_fails_unexpectedly_is_a_500_problem(api: AdminApi, world: FakeWorld) -> None:
    tenant_id = api.tenant()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the table is gone")

    world.tenants.list_api_keys = broken  # type: ignore[method-assign]
    failed = problem(api("GET", f"/v1/admin/tenants/{tenant_id}/keys"), 500)
    assert "the table is gone" not in failed["detail"] and "req-1" in failed["detail"]


# -- API plans (edge throttling) and sending rates ---------------------------------------------


def key_of(api: AdminApi, tenant_id: str) -> str:
    from petrel.services.auth import usage_key, usage_key_name

    plans = api.container.usage_plans
    key_id = plans.find_key(usage_key_name("petrel-test", tenant_id))
    assert key_id is not None
    assert plans.keys[key_id][1] == usage_key("petrel-test", tenant_id)  # the value the authorizer returns
    return key_id


def test_a_new_tenant_is_enrolled_in_its_plan_and_a_patch_moves_it(api: AdminApi, world: FakeWorld) -> None:
    """Invariant: a tenant's usage key is in exactly one usage plan, its plan's."""
    plans = api.container.usage_plans
    standard = api("POST", "/v1/admin/tenants", {"name": "Acme"}).json()
    assert (standard["api_plan"], standard["send_rate_per_second"]) == ("standard", None)
    assert plans.plans_of(key_of(api, standard["tenant_id"])) == {"up-standard"}

    bulk = api("POST", "/v1/admin/tenants", {"name": "Big", "api_plan": "bulk", "send_rate_per_second": 12.5}).json()
    assert (bulk["api_plan"], bulk["send_rate_per_second"]) == ("bulk", 12.5)
    assert plans.plans_of(key_of(api, bulk["tenant_id"])) == {"up-bulk"}

    moved = api("PATCH", f"/v1/admin/tenants/{standard['tenant_id']}", {"api_plan": "bulk"})
    assert moved.status == 200 and moved.json()["api_plan"] == "bulk"
    assert plans.plans_of(key_of(api, standard["tenant_id"])) == {"up-bulk"}
    stored = world.tenants.get_tenant(standard["tenant_id"])
    assert stored is not None and stored.api_plan == "bulk"
    # One key per tenant, however often it is enrolled.
    assert len(plans.keys) == 2

    unlimited = api("PATCH", f"/v1/admin/tenants/{bulk['tenant_id']}", {"send_rate_per_second": None}).json()
    assert (unlimited["send_rate_per_second"], unlimited["api_plan"]) == (None, "bulk")


def test_an_unknown_plan_or_a_bad_rate_is_refused_and_changes_nothing(api: AdminApi, world: FakeWorld) -> None:
    unknown = problem(api("POST", "/v1/admin/tenants", {"name": "Acme", "api_plan": "gold"}), 422)
    assert "unknown API plan 'gold'" in unknown["detail"] and "standard, bulk" in unknown["detail"]
    problem(api("POST", "/v1/admin/tenants", {"name": "Acme", "send_rate_per_second": 0}), 422)
    assert world.tenants.list_tenants() == [] and api.container.usage_plans.keys == {}
    tenant_id = api.tenant()
    problem(api("PATCH", f"/v1/admin/tenants/{tenant_id}", {"api_plan": "gold"}), 422)
    stored = world.tenants.get_tenant(tenant_id)
    assert stored is not None and stored.api_plan == "standard"
    assert api.container.usage_plans.plans_of(key_of(api, tenant_id)) == {"up-standard"}


def test_enroll_all_enrolls_tenants_made_before_usage_plans_and_is_safe_to_repeat(
    api: AdminApi, world: FakeWorld
) -> None:
    from petrel.models.records import Tenant

    plans = api.container.usage_plans
    for tenant_id, plan in (("tn_old1", "standard"), ("tn_old2", "bulk")):
        world.tenants.put_tenant(
            Tenant(tenant_id=tenant_id, name=tenant_id, created_at=world.clock.now(), api_plan=plan)
        )
    # A run that stopped half-way: tn_old1's key exists already, in the wrong plan.
    half = plans.ensure_key("petrel-test-tenant-tn_old1", "x" * 20)
    plans.add_key("up-bulk", half)
    for _ in range(2):
        answer = api("POST", "/v1/admin/tenants/enroll")
        assert answer.status == 200, answer
        assert answer.json() == {
            "enrollments": [
                {"tenant_id": "tn_old1", "api_plan": "standard", "enrolled": True},
                {"tenant_id": "tn_old2", "api_plan": "bulk", "enrolled": True},
            ]
        }
    assert plans.plans_of(half) == {"up-standard"}
    assert plans.plans_of(key_of(api, "tn_old2")) == {"up-bulk"}
    assert len(plans.keys) == 2
    one = api("POST", "/v1/admin/tenants/tn_old2/enroll")
    assert one.json() == {"tenant_id": "tn_old2", "api_plan": "bulk", "enrolled": True}
    problem(api("POST", "/v1/admin/tenants/tn_nobody/enroll"), 404)


def test_without_api_gateway_a_tenant_is_not_enrolled_but_its_plan_is_checked(world: FakeWorld) -> None:
    from petrel.services import tenants

    deps = AdminDeps(tenants=world.tenants, secrets=world.secrets, clock=world.clock, secrets_prefix=PREFIX)
    made = tenants.create_tenant(deps, "Acme")
    assert tenants.enroll_tenant(deps, made) == tenants.Enrollment(made.tenant_id, "standard", None)
    with pytest.raises(ConfigurationError, match="unknown API plan 'bulk'"):
        tenants.create_tenant(deps, "Big", api_plan="bulk")


SHAPING = {
    "rate_per_second": 7.5,
    "burst": 15,
    "warmup": [{"day": 1, "daily_cap": 300}, {"day": 0, "daily_cap": 100}],
    "bounce_threshold": 0.05,
    "probation_minutes": 30,
}


def test_a_server_is_added_with_its_shaping_and_a_patch_changes_only_the_fields_sent(
    api: AdminApi, world: FakeWorld
) -> None:
    from petrel.models.records import DEFAULT_WARMUP, ServerShaping

    tenant_id = api.tenant()
    default = add_server(api, tenant_id)
    assert default["shaping"] == {**ServerShaping().model_dump(), "warmup": [s.model_dump() for s in DEFAULT_WARMUP]}
    assert (default["paused_at"], default["paused_reason"], default["resume_at"], default["events"]) == (
        None,
        None,
        None,
        [],
    )
    server = add_server(api, tenant_id, shaping=SHAPING)
    shaping = server["shaping"]
    assert (shaping["rate_per_second"], shaping["burst"], shaping["bounce_threshold"]) == (7.5, 15, 0.05)
    assert shaping["warmup"] == [{"day": 0, "daily_cap": 100}, {"day": 1, "daily_cap": 300}]  # by day
    assert shaping["concurrency"] == ServerShaping().concurrency  # not sent: the default

    path = f"/v1/admin/tenants/{tenant_id}/servers/{server['server_id']}"
    changed = api("PATCH", path, {"shaping": {"concurrency": 8, "warmup": []}}).json()
    assert changed["shaping"] == {**shaping, "concurrency": 8, "warmup": []}
    [stored] = [s for s in world.tenants.list_servers(tenant_id) if s.server_id == server["server_id"]]
    assert stored.shaping.warmup == () and stored.shaping.rate_per_second == 7.5 and stored.shaping.concurrency == 8


@pytest.mark.parametrize(
    "shaping",
    [
        {"rate_per_second": 0},
        {"concurrency": 33},
        {"warmup": [{"day": 0, "daily_cap": 0}]},
        {"warmup": [{"day": 1, "daily_cap": 10}, {"day": 1, "daily_cap": 20}]},
        {"bounce_window": 20, "bounce_min_sends": 50},
        {"rate": 3},
    ],
)
def test_a_shaping_out_of_bounds_is_refused_and_changes_nothing(
    api: AdminApi, world: FakeWorld, shaping: dict[str, Any]
) -> None:
    tenant_id = api.tenant()
    server = add_server(api, tenant_id)
    before = world.tenants.list_servers(tenant_id)
    problem(api("PATCH", f"/v1/admin/tenants/{tenant_id}/servers/{server['server_id']}", {"shaping": shaping}), 422)
    assert world.tenants.list_servers(tenant_id) == before
    body = {"host": "mail.b.test", "username": "u@b.test", "password": "p", "shaping": shaping}
    problem(api("POST", f"/v1/admin/tenants/{tenant_id}/servers", body), 422)
    assert world.tenants.list_servers(tenant_id) == before


def test_resume_ends_an_automatic_pause_with_an_event_and_keeps_the_last_twenty(
    api: AdminApi, world: FakeWorld
) -> None:
    from datetime import timedelta

    from petrel.models.records import ServerEvent

    tenant_id = api.tenant()
    server_id = add_server(api, tenant_id)["server_id"]
    [server] = world.tenants.list_servers(tenant_id)
    now = world.clock.now()
    old = tuple(ServerEvent(type="server.paused", at=now - timedelta(minutes=i), detail=f"e{i}") for i in range(25))
    world.tenants.put_server(
        server.model_copy(
            update={
                "paused_at": now,
                "paused_reason": "bounce rate 0.15 over the last 200 sends",
                "resume_at": now + timedelta(hours=1),
                "events": old,
            }
        )
    )
    shown = api("GET", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}").json()
    assert shown["paused_reason"].startswith("bounce rate") and len(shown["events"]) == 25

    resumed = api("POST", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/resume").json()
    assert (resumed["enabled"], resumed["paused_at"], resumed["paused_reason"], resumed["resume_at"]) == (
        True,
        None,
        None,
        None,
    )
    assert len(resumed["events"]) == 20
    assert resumed["events"][-1]["type"] == "server.resumed" and "bounce rate" in resumed["events"][-1]["detail"]
    assert resumed["events"][0]["detail"] == "e6"  # the oldest dropped
    [stored] = world.tenants.list_servers(tenant_id)
    assert not stored.paused and stored.enabled and len(stored.events) == 20
    # A second resume changes nothing: no second event.
    again = api("POST", f"/v1/admin/tenants/{tenant_id}/servers/{server_id}/resume").json()
    assert again["events"] == resumed["events"]
