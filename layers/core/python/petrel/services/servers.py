"""Changing a tenant's SMTP servers after they are added (petrel.services.tenants adds and removes them):
their settings, pausing and resuming, the connectivity check, and password rotation.

What always holds for a rotation with `verify`: the stored password changes only after the server
accepted the new one with SMTP AUTH. A refused (or unverifiable) password is a ConfigurationError and
nothing is written, so the password the workers use is always one the server took at some point; a
worker whose cached password is refused re-reads it at once (petrel.services.deliver), so there is no
window in which a good stored password goes unused. The check runs through `SmtpCheck` (the container
passes petrel.adapters.smtp_check.check_server; tests pass their own), never smtplib from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from petrel.errors import ConfigurationError
from petrel.models.admin import Step
from petrel.models.records import Pool, ServerEvent, ServerShaping, SmtpSecurity, SmtpServer
from petrel.ports import RecordNotFound
from petrel.services.tenants import AdminDeps, checked_ca_bundle, find_server, set_smtp_password

# check(server, password, mail_from, report) -> the failed step, or None: one SMTP conversation that
# sends no mail (connect, TLS, AUTH, MAIL FROM, RSET).
SmtpCheck = Callable[[SmtpServer, str, str, Callable[[Step], None]], "Step | None"]
# The steps that must have passed for a password to count as accepted.
_AUTH_STEP = "auth"
# The events a server keeps (the newest last).
MAX_SERVER_EVENTS = 20


def shaped(current: ServerShaping, changes: Mapping[str, Any] | None) -> ServerShaping:
    """`current` with the fields `changes` names replaced (`warmup`: a list of {day, daily_cap}, [] for
    none), checked as a whole; a value out of bounds is a ConfigurationError naming the field."""
    if not changes:
        return current
    unknown = sorted(set(changes) - set(ServerShaping.model_fields))
    if unknown:
        raise ConfigurationError(f"unknown shaping setting {', '.join(unknown)}")
    merged = {**current.model_dump(), **changes}
    if merged.get("warmup") is not None:
        days = [step["day"] if isinstance(step, Mapping) else getattr(step, "day", None) for step in merged["warmup"]]
        if len(set(days)) != len(days):
            raise ConfigurationError("warmup: each day at most once")
        merged["warmup"] = sorted(
            merged["warmup"], key=lambda step: step["day"] if isinstance(step, Mapping) else step.day
        )
    try:
        result = ServerShaping.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigurationError(f"shaping {where}: {first['msg']}") from exc
    if result.bounce_min_sends > result.bounce_window:
        raise ConfigurationError(
            f"shaping bounce_min_sends ({result.bounce_min_sends}) cannot be more than bounce_window "
            f"({result.bounce_window}): the rate is taken over the last bounce_window sends"
        )
    return result


@dataclass(frozen=True)
class ServerChanges:
    """The settings of a server an operator may change; None leaves one as it is. `ca_bundle=""` drops
    the server's own CA (the system's CAs are trusted again)."""

    host: str | None = None
    port: int | None = None
    security: SmtpSecurity | None = None
    username: str | None = None
    pool: Pool | None = None
    weight: int | None = None
    ca_bundle: str | None = None
    shaping: Mapping[str, Any] | None = None  # the shaping fields to change (the others are kept)

    def given(self) -> dict[str, object]:
        return {key: value for key, value in vars(self).items() if value is not None}


def update_server(deps: AdminDeps, tenant_id: str, server_id: str, changes: ServerChanges) -> SmtpServer:
    """Change some settings of a server; the workers see it once their configuration cache expires."""
    given = changes.given()
    if not given:
        raise ConfigurationError("nothing to change: give at least one setting")
    server = find_server(deps, tenant_id, server_id)
    if "host" in given:
        given["host"] = str(given["host"]).strip()
        if not given["host"]:
            raise ConfigurationError("a server needs its host")
    if "username" in given and not str(given["username"]).strip():
        raise ConfigurationError("a server needs its username")
    if given.get("port") == 25:
        raise ConfigurationError("port 25 is not usable from Lambda; use 587 (starttls) or 465 (tls)")
    if "ca_bundle" in given:
        given["ca_bundle"] = checked_ca_bundle(str(given["ca_bundle"]))
    if "shaping" in given:
        given["shaping"] = shaped(server.shaping, changes.shaping)
    try:
        updated = SmtpServer.model_validate({**server.model_dump(), **given})
    except ValueError as exc:
        raise ConfigurationError(str(exc).splitlines()[0]) from exc
    deps.tenants.put_server(updated)
    return updated


def set_enabled(deps: AdminDeps, tenant_id: str, server_id: str, enabled: bool) -> SmtpServer:
    """Pause (False) or resume (True) a server: a paused one takes no new mail, its pool's others do.

    Resuming also ends an automatic pause (the workers' bounce-rate or connection-failure protection:
    `paused_at`, `paused_reason`, `resume_at`) and records `server.resumed`; a server that is enabled
    and not paused is left as it is (no event), so a repeated resume changes nothing."""
    server = find_server(deps, tenant_id, server_id)
    if not enabled:
        if not server.enabled:
            return server
        updated = server.model_copy(update={"enabled": False})
    else:
        if server.enabled and not server.paused:
            return server
        detail = f"by operator (was paused: {server.paused_reason})" if server.paused_reason else "by operator"
        event = ServerEvent(type="server.resumed", at=deps.clock.now(), detail=detail)
        updated = server.model_copy(
            update={
                "enabled": True,
                "paused_at": None,
                "paused_reason": None,
                "resume_at": None,
                "events": (*server.events, event)[-MAX_SERVER_EVENTS:],
            }
        )
    deps.tenants.put_server(updated)
    return updated


def check_mail_from(deps: AdminDeps, server: SmtpServer) -> str:
    """The envelope sender a check says MAIL FROM with: the tenant's first return path, like its mail,
    else the relay account's own domain."""
    domains = deps.tenants.list_domains(server.tenant_id)
    domain = domains[0].return_path_domain if domains else server.username.rpartition("@")[2] or server.host
    return f"bounces+petrel-server-test@{domain}"


def stored_password(deps: AdminDeps, server: SmtpServer) -> str:
    try:
        return deps.secrets.get_secret(server.secret_name)
    except RecordNotFound as exc:
        raise ConfigurationError(
            f"server {server.server_id} has no stored password: set one with PUT .../password"
        ) from exc


def test_server(deps: AdminDeps, tenant_id: str, server_id: str, check: SmtpCheck) -> list[Step]:
    """The check with the stored password: every step, the failed one last."""
    server = find_server(deps, tenant_id, server_id)
    steps: list[Step] = []
    check(server, stored_password(deps, server), check_mail_from(deps, server), steps.append)
    return steps


def rotate_password(
    deps: AdminDeps, tenant_id: str, server_id: str, password: str, *, check: SmtpCheck | None
) -> SmtpServer:
    """Store a new SMTP password; with `check`, only once the server accepted it with SMTP AUTH."""
    if not password:
        raise ConfigurationError("a server needs its SMTP password")
    server = find_server(deps, tenant_id, server_id)
    if check is not None:
        steps: list[Step] = []
        failed = check(server, password, check_mail_from(deps, server), steps.append)
        if not any(step.name == _AUTH_STEP and step.ok for step in steps):
            where = f"{failed.name}: {failed.detail}" if failed else "no AUTH step ran"
            raise ConfigurationError(f"the new password was not stored: the server did not accept it ({where})")
    return set_smtp_password(deps, tenant_id, server_id, password)
