"""services.query (reading back) and services.tenants (administration) with fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from petrel.errors import ConfigurationError, InvalidRequest, NotFound
from petrel.models.records import Event, MessageStatus
from petrel.ports import MessageKey, Transition
from petrel.services import query, tenants
from tests.fakes import FakeWorld, records


def test_get_email_orders_recipients_and_events(world: FakeWorld) -> None:
    email, messages = records.email("tn_a", ["z@x.org", ("a@x.org", "cc"), ("m@x.org", "bcc")])
    world.messages.create_email(email, messages, 0)
    later = world.clock.now() + timedelta(minutes=1)
    for message in reversed(messages):
        world.messages.transition(
            MessageKey("tn_a", email.email_id, message.message_id),
            expected=[MessageStatus.QUEUED],
            attempt=None,
            change=Transition(
                MessageStatus.CANCELLED,
                events=(Event(type="email.cancelled", at=later, message_id=message.message_id, recipient="r"),),
            ),
            now=later,
        )

    view = query.get_email(world.messages, "tn_a", email.email_id)

    assert [r.email for r in view.recipients] == ["z@x.org", "a@x.org", "m@x.org"]
    assert [r.kind for r in view.recipients] == ["to", "cc", "bcc"]
    assert [e.type for e in view.events] == ["email.queued"] * 3 + ["email.cancelled"] * 3
    assert view.message_id_header == email.header_message_id
    assert "body_inline" not in view.model_dump()


@pytest.mark.parametrize("email_id", ["nope", "em_short", "msg_01KF0FV2E05JW2ZEWDNTNKMXKG"])
def test_get_email_with_a_malformed_id_is_not_found(world: FakeWorld, email_id: str) -> None:
    with pytest.raises(NotFound):
        query.get_email(world.messages, "tn_a", email_id)


def test_another_tenants_email_is_not_found(world: FakeWorld) -> None:
    email, messages = records.email("tn_a")
    world.messages.create_email(email, messages, 0)
    with pytest.raises(NotFound):
        query.get_email(world.messages, "tn_b", email.email_id)


@pytest.mark.parametrize(("limit", "status"), [(0, None), (101, None), (10, "sent"), (10, "QUEUED")])
def test_list_rejects_bad_parameters(world: FakeWorld, limit: int, status: str | None) -> None:
    with pytest.raises(InvalidRequest):
        query.list_messages(world.messages, "tn_a", status=status, limit=limit, cursor=None)


def test_list_pages(world: FakeWorld) -> None:
    for minute in range(3):
        email, messages = records.email("tn_a", at=world.clock.now() + timedelta(minutes=minute))
        world.messages.create_email(email, messages, 0)

    first = query.list_messages(world.messages, "tn_a", status="queued", limit=2, cursor=None)
    second = query.list_messages(world.messages, "tn_a", status="queued", limit=2, cursor=first.next_cursor)

    assert len(first.data) == 2 and first.next_cursor is not None
    assert len(second.data) == 1 and second.next_cursor is None
    assert first.data[0].created_at > first.data[1].created_at > second.data[0].created_at


def test_add_smtp_server_keeps_the_password_in_the_secret_store_only(world: FakeWorld) -> None:
    deps = world.admin_deps("petrel-dev/tenants/")
    tenant = tenants.create_tenant(deps, "  Acme  ")
    server = tenants.add_smtp_server(
        deps, tenant.tenant_id, host="mail.acme.example", port=587, security="starttls", username="relay", password="pw"
    )

    assert tenant.name == "Acme"
    assert server.secret_name == f"petrel-dev/tenants/{tenant.tenant_id}/smtp/{server.server_id}"
    assert world.secrets.secrets == {server.secret_name: "pw"}
    assert world.tenants.list_servers(tenant.tenant_id) == [server]
    assert "pw" not in server.model_dump_json().replace("petrel", "")

    tenants.set_smtp_password(deps, tenant.tenant_id, server.server_id, "pw2")
    assert world.secrets.secrets[server.secret_name] == "pw2"

    tenants.remove_smtp_server(deps, tenant.tenant_id, server.server_id)
    assert world.secrets.secrets == {} and world.tenants.list_servers(tenant.tenant_id) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"port": 25},
        {"security": "ssl"},
        {"pool": "marketing"},
        {"password": ""},
        {"host": "  "},
        {"weight": 0},
        {"ca_bundle": "not a pem"},
    ],
)
def test_add_smtp_server_refuses_bad_input(world: FakeWorld, fields: dict[str, object]) -> None:
    deps = world.admin_deps()
    tenant = tenants.create_tenant(deps, "Acme")
    values: dict[str, object] = {
        "host": "mail.acme.example",
        "port": 587,
        "security": "starttls",
        "username": "relay",
        "password": "pw",
    }
    values.update(fields)
    with pytest.raises(ConfigurationError):
        tenants.add_smtp_server(deps, tenant.tenant_id, **values)  # type: ignore[arg-type]
    assert world.secrets.secrets == {} and world.tenants.servers == {}


def test_domains_and_keys_need_an_existing_tenant(world: FakeWorld) -> None:
    deps = world.admin_deps()
    with pytest.raises(ConfigurationError):
        tenants.add_domain(deps, "tn_missing", "example.com")
    with pytest.raises(ConfigurationError):
        tenants.create_api_key(deps, "tn_missing")
    tenant = tenants.create_tenant(deps, "Acme")
    with pytest.raises(ConfigurationError, match="no SMTP server"):  # nothing for its SPF record to authorize
        tenants.add_domain(deps, tenant.tenant_id, "example.com")
    spf = ["a:mail.example.com"]
    domain = tenants.add_domain(deps, tenant.tenant_id, "Bücher.Example", "Bounce.Bücher.Example", spf=spf)
    assert (domain.domain, domain.return_path_domain) == ("xn--bcher-kva.example", "bounce.xn--bcher-kva.example")
    assert domain.status == "pending" and domain.keys[0].secret_name in world.secrets.secrets
    with pytest.raises(ConfigurationError):
        tenants.add_domain(deps, tenant.tenant_id, "not a domain", spf=spf)
    with pytest.raises(ConfigurationError, match="already"):
        tenants.add_domain(deps, tenant.tenant_id, "bücher.example", spf=spf)


def test_revoke_api_key_twice_is_an_error(world: FakeWorld) -> None:
    deps = world.admin_deps()
    tenant = tenants.create_tenant(deps, "Acme")
    minted = tenants.create_api_key(deps, tenant.tenant_id, "ci")
    tenants.revoke_api_key(deps, tenant.tenant_id, minted.key.key_id)
    with pytest.raises(ConfigurationError):
        tenants.revoke_api_key(deps, tenant.tenant_id, minted.key.key_id)
