"""The admin API (`/v1/admin/...`): tenants, API keys, sending domains, SMTP servers and mailboxes, for
operators and the `petrel` command. A second Powertools REST resolver, in a Lambda function of its own.

Authorization is IAM's, before the function runs: API Gateway's `AWS_IAM` on `/v1/admin/{proxy+}`
deployed, the local front's SigV4 check (local/sigv4.py) locally. The function trusts the request
context's identity only to name the caller in its access log (one line per request: method, path,
status, duration and the caller's ARN, never a body or a password).

Every answer is JSON; every error an RFC 9457 problem (petrel.api.http): the services' one-line
ConfigurationError is a 422 with that line as its detail, a tenant, server, key, mailbox or domain that
does not exist a 404 (looked up here before the service runs), AlreadyExists a 409. Responses never
hold a password, a key's hash, a secret's name or a private key (petrel.models.admin's views).

Cold start: the services are imported by the routes that use them, so a request pays only for its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from petrel.api.http import (
    JSON,
    PROBLEM_JSON,
    access_fields,
    problem_body,
    problem_response,
    proxy_response,
    request_problem,
    single_value_headers,
)
from petrel.errors import ConfigurationError, Conflict, InternalError, InvalidRequest, NotFound, PetrelError
from petrel.models import admin as views
from petrel.models.api import CreateDomainRequest, DomainView, UpdateDomainRequest
from petrel.models.records import SmtpSecurity, Tenant
from petrel.ports import AlreadyExists, RecordNotFound

if TYPE_CHECKING:
    from petrel.observability import Telemetry
    from petrel.ports import Clock, JobQueue, MailboxReader, MessageStore, TenantStore
    from petrel.services.domains import DomainDeps
    from petrel.services.mailboxes import MailboxDeps
    from petrel.services.servers import SmtpCheck
    from petrel.services.tenants import AdminDeps, Enrollment

PREFIX = "/v1/admin"
# The submission port each security setting means when none is given.
SMTP_PORTS = {SmtpSecurity.STARTTLS: 587, SmtpSecurity.TLS: 465}


class AdminApiPorts(Protocol):
    """What the admin routes are built on (petrel.container.admin_api.AdminApiContainer deployed; the
    in-memory fakes in unit tests). Each bundle is built on first use."""

    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def tenants(self) -> TenantStore: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def admin(self) -> AdminDeps: ...
    @property
    def mailbox_admin(self) -> MailboxDeps: ...
    @property
    def smtp_check(self) -> SmtpCheck: ...
    @property
    def mailbox_reader(self) -> MailboxReader: ...
    @property
    def messages(self) -> MessageStore: ...  # a resume releases the tenant's held mail
    @property
    def queue(self) -> JobQueue: ...
    @property
    def domains(self) -> DomainDeps: ...


def _serialize(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _no_content() -> Response[str]:
    return Response(204, JSON, "")


class AdminApiApplication:
    """The admin function's handler (without the logger's context injection, see petrel.entrypoints)."""

    def __init__(self, ports: AdminApiPorts) -> None:
        self.ports = ports
        self.logger = ports.telemetry.logger
        self.resolver = APIGatewayRestResolver(enable_validation=True, serializer=_serialize)
        self._install_problems()
        register_admin_routes(self.resolver, ports)

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        result = self.handle(event, context)
        identity = (event.get("requestContext") or {}).get("identity") or {}
        caller = identity.get("userArn") or identity.get("caller")
        self.logger.info("admin request", extra={**access_fields(event, result, started), "caller": caller})
        return result

    def handle(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        path = str(event.get("path") or "/")
        try:
            result = self.resolver.resolve(dict(event), context)
        except Exception:
            self.logger.exception("unhandled error", extra={"path": path})
            request_id = (event.get("requestContext") or {}).get("requestId", "")
            return problem_response(InternalError(f"an internal error occurred (request {request_id})"), path)
        headers = single_value_headers(result)
        content_type = headers.pop("Content-Type", JSON)
        return proxy_response(int(result["statusCode"]), result.get("body") or "", content_type, headers)

    def _install_problems(self) -> None:
        app = self.resolver

        def problem(error: PetrelError) -> Response[str]:
            body = json.dumps(problem_body(error, app.current_event.path))
            return Response(error.status, PROBLEM_JSON, body, headers=error.headers())

        def invalid(error: RequestValidationError) -> Response[str]:
            errors = error.errors()
            if any(e["loc"][:1] == ("response",) for e in errors):  # a route answered off its model: a bug
                return unexpected(error)
            return problem(request_problem(errors))

        def refused(error: ConfigurationError) -> Response[str]:
            return problem(InvalidRequest(str(error)))

        def missing(error: RecordNotFound) -> Response[str]:
            return problem(NotFound(str(error)))

        def exists(error: AlreadyExists) -> Response[str]:
            return problem(Conflict(str(error)))

        @app.not_found
        def no_route(_: NotFoundError) -> Response[str]:
            event = app.current_event
            return problem(NotFound(f"no route {event.http_method.upper()} {event.path}"))

        def unexpected(error: Exception) -> Response[str]:
            event = app.current_event
            self.logger.exception("unhandled error", extra={"path": event.path, "method": event.http_method})
            return problem(InternalError(f"an internal error occurred (request {event.request_context.request_id})"))

        app.exception_handler(PetrelError)(problem)
        app.exception_handler(RequestValidationError)(invalid)
        app.exception_handler(ConfigurationError)(refused)
        app.exception_handler(RecordNotFound)(missing)
        app.exception_handler(AlreadyExists)(exists)
        app.exception_handler(Exception)(unexpected)


def register_admin_routes(app: APIGatewayRestResolver, ports: AdminApiPorts) -> None:
    """Every `/v1/admin` route on `app`, as closures over `ports`, one group at a time."""
    _tenant_routes(app, ports)
    _key_routes(app, ports)
    _server_routes(app, ports)
    _mailbox_routes(app, ports)
    _domain_routes(app, ports)


def _require_tenant(ports: AdminApiPorts, tenant_id: str) -> None:
    if ports.tenants.get_tenant(tenant_id) is None:
        raise NotFound(f"no tenant {tenant_id!r}")


def _fields_sent(app: APIGatewayRestResolver) -> set[str]:
    """The names a JSON object body really holds (PATCH: a quota sent as null is removed, one left out
    is kept; pydantic's defaults cannot tell the two apart)."""
    body = app.current_event.json_body
    return set(body) if isinstance(body, dict) else set()


def _tenant_routes(app: APIGatewayRestResolver, ports: AdminApiPorts) -> None:
    @app.post(f"{PREFIX}/tenants", status_code=201)
    def create_tenant(body: Annotated[views.CreateTenantRequest, Body()]) -> views.TenantView:
        from petrel.services import tenants

        created = tenants.create_tenant(
            ports.admin,
            body.name,
            body.max_message_bytes,
            max_age_hours=body.max_age_hours,
            daily_quota=body.daily_quota,
            per_second_quota=body.per_second_quota,
            allow_unverified_domains=body.allow_unverified_domains,
            api_plan=body.api_plan,
            send_rate_per_second=body.send_rate_per_second,
        )
        return views.TenantView.of(created)

    @app.post(f"{PREFIX}/tenants/enroll")
    def enroll_all() -> views.EnrollmentList:
        """Every tenant's API key in its plan's usage plan (the upgrade step for tenants made before
        usage plans; safe to repeat)."""
        from petrel.services import tenants

        done = tenants.enroll_all(ports.admin)
        return views.EnrollmentList(enrollments=[_enrollment(e) for e in done])

    @app.post(f"{PREFIX}/tenants/<tenant_id>/enroll")
    def enroll(tenant_id: str) -> views.EnrollmentView:
        from petrel.services import tenants

        tenant = ports.tenants.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return _enrollment(tenants.enroll_tenant(ports.admin, tenant))

    @app.get(f"{PREFIX}/tenants")
    def list_tenants() -> views.TenantList:
        found = sorted(ports.tenants.list_tenants(), key=lambda t: (t.created_at, t.tenant_id))
        return views.TenantList(tenants=[views.TenantView.of(t) for t in found])

    @app.get(f"{PREFIX}/tenants/<tenant_id>")
    def get_tenant(tenant_id: str) -> views.TenantView:
        tenant = ports.tenants.get_tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return views.TenantView.of(tenant)

    @app.patch(f"{PREFIX}/tenants/<tenant_id>")
    def update_tenant(tenant_id: str, body: Annotated[views.UpdateTenantRequest, Body()]) -> views.TenantView:
        from petrel.services import tenants

        _require_tenant(ports, tenant_id)
        sent = _fields_sent(app)
        settings = tenants.TenantSettings(
            **{name: getattr(body, name) for name in sent if name in views.UpdateTenantRequest.model_fields}
        )
        return views.TenantView.of(tenants.update_tenant(ports.admin, tenant_id, settings))

    @app.post(f"{PREFIX}/tenants/<tenant_id>/suspend")
    def suspend_tenant(tenant_id: str, body: Annotated[views.SuspendRequest | None, Body()] = None) -> views.TenantView:
        from petrel.services import tenants

        _require_tenant(ports, tenant_id)
        reason = body.reason if body is not None else None
        return views.TenantView.of(tenants.suspend_tenant(ports.admin, tenant_id, reason))

    @app.post(f"{PREFIX}/tenants/<tenant_id>/resume")
    def resume_tenant(tenant_id: str) -> views.ResumedTenant:
        from petrel.services import tenants

        _require_tenant(ports, tenant_id)
        resumed = tenants.resume_tenant(ports.admin, tenant_id, messages=ports.messages, queue=ports.queue)
        return views.ResumedTenant(tenant=views.TenantView.of(resumed.tenant), released=resumed.released)


def _enrollment(done: Enrollment) -> views.EnrollmentView:
    return views.EnrollmentView(tenant_id=done.tenant_id, api_plan=done.api_plan, enrolled=done.key_id is not None)


def _key_routes(app: APIGatewayRestResolver, ports: AdminApiPorts) -> None:
    @app.post(f"{PREFIX}/tenants/<tenant_id>/keys", status_code=201)
    def create_key(tenant_id: str, body: Annotated[views.CreateKeyRequest | None, Body()] = None) -> views.CreatedKey:
        from petrel.services.auth import mint_api_key

        _require_tenant(ports, tenant_id)
        request = body or views.CreateKeyRequest()
        minted = mint_api_key(ports.tenants, ports.clock, tenant_id, request.name, request.scopes)
        key = minted.key
        return views.CreatedKey(
            key_id=key.key_id,
            api_key=minted.secret,
            prefix=key.prefix,
            name=key.name,
            scopes=list(key.granted),
            created_at=key.created_at,
        )

    @app.get(f"{PREFIX}/tenants/<tenant_id>/keys")
    def list_keys(
        tenant_id: str,
        prefix: Annotated[str | None, Query(max_length=64, description="keys whose prefix starts so")] = None,
    ) -> views.KeyList:
        _require_tenant(ports, tenant_id)
        keys = ports.tenants.list_api_keys(tenant_id)
        return views.KeyList(keys=[views.KeyView.of(k) for k in keys if prefix is None or k.prefix.startswith(prefix)])

    @app.delete(f"{PREFIX}/tenants/<tenant_id>/keys/<key_id>")
    def revoke_key(tenant_id: str, key_id: str) -> views.RevokedKey:
        from petrel.ports import WriteConflict

        _require_tenant(ports, tenant_id)
        try:
            ports.tenants.revoke_api_key(tenant_id, key_id, ports.clock.now())
        except RecordNotFound:
            raise NotFound(f"no API key {key_id!r} for tenant {tenant_id!r}") from None
        except WriteConflict:
            pass  # revoked already: the first revocation's time stands (a repeated DELETE is a success)
        key = next((k for k in ports.tenants.list_api_keys(tenant_id) if k.key_id == key_id), None)
        if key is None or key.revoked_at is None:  # gone meanwhile: nothing is left to revoke
            raise NotFound(f"no API key {key_id!r} for tenant {tenant_id!r}")
        return views.RevokedKey(key_id=key_id, revoked_at=key.revoked_at)


def _server_routes(app: APIGatewayRestResolver, ports: AdminApiPorts) -> None:
    base = f"{PREFIX}/tenants/<tenant_id>/servers"

    def require(tenant_id: str, server_id: str) -> None:
        _require_tenant(ports, tenant_id)
        if not any(s.server_id == server_id for s in ports.tenants.list_servers(tenant_id)):
            raise NotFound(f"no SMTP server {server_id!r} for tenant {tenant_id!r}")

    @app.post(base, status_code=201)
    def add_server(tenant_id: str, body: Annotated[views.CreateServerRequest, Body()]) -> views.ServerView:
        from petrel.services import tenants

        _require_tenant(ports, tenant_id)
        server = tenants.add_smtp_server(
            ports.admin,
            tenant_id,
            host=body.host,
            port=body.port or SMTP_PORTS[body.security],
            security=body.security.value,
            username=body.username,
            password=body.password,
            pool=body.pool,
            weight=body.weight,
            ca_bundle=body.ca_bundle or None,
            shaping=body.shaping.given() if body.shaping is not None else None,
        )
        return views.ServerView.of(server)

    @app.get(base)
    def list_servers(tenant_id: str) -> views.ServerList:
        _require_tenant(ports, tenant_id)
        return views.ServerList(servers=[views.ServerView.of(s) for s in ports.tenants.list_servers(tenant_id)])

    @app.get(f"{base}/<server_id>")
    def get_server(tenant_id: str, server_id: str) -> views.ServerView:
        from petrel.services import tenants

        require(tenant_id, server_id)
        return views.ServerView.of(tenants.find_server(ports.admin, tenant_id, server_id))

    @app.patch(f"{base}/<server_id>")
    def update_server(
        tenant_id: str, server_id: str, body: Annotated[views.UpdateServerRequest, Body()]
    ) -> views.ServerView:
        from petrel.services import servers

        require(tenant_id, server_id)
        given = body.model_dump(exclude_none=True, exclude={"shaping"})
        shaping = body.shaping.given() if body.shaping is not None else None
        changes = servers.ServerChanges(**given, shaping=shaping or None)
        return views.ServerView.of(servers.update_server(ports.admin, tenant_id, server_id, changes))

    def enabled_route(action: str, enabled: bool) -> None:
        @app.post(f"{base}/<server_id>/{action}")
        def set_enabled(tenant_id: str, server_id: str) -> views.ServerView:
            from petrel.services import servers

            require(tenant_id, server_id)
            return views.ServerView.of(servers.set_enabled(ports.admin, tenant_id, server_id, enabled))

    enabled_route("pause", False)
    enabled_route("resume", True)

    @app.put(f"{base}/<server_id>/password")
    def set_password(
        tenant_id: str, server_id: str, body: Annotated[views.ServerPasswordRequest, Body()]
    ) -> views.ServerView:
        from petrel.services import servers

        require(tenant_id, server_id)
        check = ports.smtp_check if body.verify else None
        return views.ServerView.of(
            servers.rotate_password(ports.admin, tenant_id, server_id, body.password, check=check)
        )

    @app.post(f"{base}/<server_id>/test")
    def test_server(tenant_id: str, server_id: str) -> views.ServerCheck:
        from petrel.services import servers

        require(tenant_id, server_id)
        steps = servers.test_server(ports.admin, tenant_id, server_id, ports.smtp_check)
        return views.ServerCheck(ok=all(s.ok for s in steps) and bool(steps), steps=_steps(steps))

    @app.delete(f"{base}/<server_id>")
    def remove_server(tenant_id: str, server_id: str) -> Response[str]:
        from petrel.services import tenants

        require(tenant_id, server_id)
        tenants.remove_smtp_server(ports.admin, tenant_id, server_id)
        return _no_content()


def _steps(steps: list[views.Step]) -> list[views.StepView]:
    return [views.StepView(name=s.name, ok=s.ok, detail=s.detail) for s in steps]


def _mailbox_routes(app: APIGatewayRestResolver, ports: AdminApiPorts) -> None:
    base = f"{PREFIX}/tenants/<tenant_id>/mailboxes"

    def view(tenant_id: str, mailbox_id: str) -> views.MailboxView:
        from petrel.services import mailboxes

        found = next(
            (v for v in mailboxes.list_mailboxes(ports.mailbox_admin, tenant_id) if v.mailbox.mailbox_id == mailbox_id),
            None,
        )
        if found is None:
            raise NotFound(f"no mailbox {mailbox_id!r} for tenant {tenant_id!r}")
        return views.MailboxView.of(found.mailbox, found.health, found.cursors)

    def require(tenant_id: str, mailbox_id: str) -> None:
        _require_tenant(ports, tenant_id)
        if ports.mailbox_admin.mailboxes.get_mailbox(tenant_id, mailbox_id) is None:
            raise NotFound(f"no mailbox {mailbox_id!r} for tenant {tenant_id!r}")

    @app.post(base, status_code=201)
    def add_mailbox(tenant_id: str, body: Annotated[views.CreateMailboxRequest, Body()]) -> views.MailboxView:
        from petrel.services import mailboxes

        _require_tenant(ports, tenant_id)
        options: dict[str, Any] = {"folders": tuple(body.folders)} if body.folders is not None else {}
        mailbox = mailboxes.add_mailbox(
            ports.mailbox_admin,
            tenant_id,
            address=body.address,
            host=body.host,
            password=body.password,
            security=body.security.value,
            port=body.port,
            username=body.username,
            after=body.after.value,
            move_to=body.move_to,
            ca_bundle=body.ca_bundle or None,
            **options,
        )
        return views.MailboxView.of(mailbox)

    @app.get(base)
    def list_mailboxes(tenant_id: str) -> views.MailboxList:
        from petrel.services import mailboxes

        _require_tenant(ports, tenant_id)
        found = mailboxes.list_mailboxes(ports.mailbox_admin, tenant_id)
        return views.MailboxList(mailboxes=[views.MailboxView.of(v.mailbox, v.health, v.cursors) for v in found])

    @app.get(f"{base}/<mailbox_id>")
    def get_mailbox(tenant_id: str, mailbox_id: str) -> views.MailboxView:
        require(tenant_id, mailbox_id)
        return view(tenant_id, mailbox_id)

    @app.patch(f"{base}/<mailbox_id>")
    def update_mailbox(
        tenant_id: str, mailbox_id: str, body: Annotated[views.UpdateMailboxRequest, Body()]
    ) -> views.MailboxView:
        from petrel.services import mailboxes

        require(tenant_id, mailbox_id)
        given = body.model_dump(exclude_none=True, mode="json")
        if "folders" in given:
            given["folders"] = tuple(given["folders"])
        mailboxes.update_mailbox(ports.mailbox_admin, tenant_id, mailbox_id, mailboxes.MailboxSettings(**given))
        return view(tenant_id, mailbox_id)

    @app.put(f"{base}/<mailbox_id>/password")
    def set_password(
        tenant_id: str, mailbox_id: str, body: Annotated[views.MailboxPasswordRequest, Body()]
    ) -> views.MailboxView:
        from petrel.services import mailboxes

        require(tenant_id, mailbox_id)
        mailboxes.set_password(ports.mailbox_admin, tenant_id, mailbox_id, body.password)
        return view(tenant_id, mailbox_id)

    @app.post(f"{base}/<mailbox_id>/test")
    def test_mailbox(tenant_id: str, mailbox_id: str) -> views.MailboxCheck:
        from petrel.services import mailboxes
        from petrel.services.mailbox_check import check_mailbox

        require(tenant_id, mailbox_id)
        deps = ports.mailbox_admin
        mailbox = mailboxes.find_mailbox(deps, tenant_id, mailbox_id)
        steps: list[views.Step] = []
        failed = check_mailbox(ports.mailbox_reader, mailbox, mailboxes.mailbox_password(deps, mailbox), steps.append)
        folders = [s for s in steps if s.name == "select"]
        return views.MailboxCheck(ok=failed is None, steps=_steps(steps), folders=_steps(folders))

    @app.delete(f"{base}/<mailbox_id>")
    def remove_mailbox(tenant_id: str, mailbox_id: str) -> Response[str]:
        from petrel.services import mailboxes

        require(tenant_id, mailbox_id)
        mailboxes.remove_mailbox(ports.mailbox_admin, tenant_id, mailbox_id)
        return _no_content()


def _domain_routes(app: APIGatewayRestResolver, ports: AdminApiPorts) -> None:
    """The tenant API's domain operations for any tenant (petrel.services.domains, its views), and the
    lookup of a domain by name alone (`petrel dns publish` needs the records of whichever tenant has it)."""
    base = f"{PREFIX}/tenants/<tenant_id>/domains"

    def tenant(tenant_id: str) -> Tenant:
        found = ports.tenants.get_tenant(tenant_id)
        if found is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return found

    @app.post(base, status_code=201)
    def create_domain(tenant_id: str, body: Annotated[CreateDomainRequest, Body()]) -> DomainView:
        from petrel.services import domains

        owner = tenant(tenant_id)
        return domains.view(domains.create_domain(ports.domains, owner, body), owner)

    @app.get(base)
    def list_domains(tenant_id: str) -> views.DomainList:
        from petrel.services import domains

        owner = tenant(tenant_id)
        found = domains.list_domains(ports.domains, tenant_id)
        return views.DomainList(domains=[domains.view(d, owner) for d in found])

    @app.get(f"{base}/<domain>")
    def get_domain(tenant_id: str, domain: str) -> DomainView:
        from petrel.services import domains

        owner = tenant(tenant_id)
        return domains.view(domains.get_domain(ports.domains, tenant_id, domain), owner)

    @app.patch(f"{base}/<domain>")
    def update_domain(tenant_id: str, domain: str, body: Annotated[UpdateDomainRequest, Body()]) -> DomainView:
        from petrel.services import domains

        owner = tenant(tenant_id)
        return domains.view(domains.update_domain(ports.domains, tenant_id, domain, body), owner)

    @app.post(f"{base}/<domain>/verify")
    def verify_domain(tenant_id: str, domain: str) -> DomainView:
        from petrel.services import domains

        owner = tenant(tenant_id)
        return domains.view(domains.verify(ports.domains, tenant_id, domain), owner)

    @app.post(f"{base}/<domain>/rotate")
    def rotate_key(tenant_id: str, domain: str) -> DomainView:
        from petrel.services import domains

        owner = tenant(tenant_id)
        return domains.view(domains.rotate_key(ports.domains, tenant_id, domain), owner)

    @app.delete(f"{base}/<domain>")
    def delete_domain(tenant_id: str, domain: str) -> Response[str]:
        from petrel.services import domains

        tenant(tenant_id)
        domains.delete_domain(ports.domains, tenant_id, domain)
        return _no_content()

    @app.get(f"{PREFIX}/domains/<domain>")
    def find_domain(domain: str) -> DomainView:
        from petrel.services import domains

        found = ports.tenants.find_domain(domain.lower().rstrip("."))
        if found is None:
            raise NotFound(f"no tenant has the sending domain {domain}")
        return domains.view(found, ports.tenants.get_tenant(found.tenant_id))
