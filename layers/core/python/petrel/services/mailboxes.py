"""Mailbox administration: the tenants' MailU mailboxes that the poller reads over IMAP.

Used by the `petrel` command (cli/); every refusal is a ConfigurationError whose text is the one line
the operator reads, and nothing is written when one is raised. What always holds:

- a mailbox's password is in Secrets Manager only (at `Mailbox.secret_name`), never in its record;
- a tenant has at most one mailbox per address (compared case-insensitively), on a domain of its own
  (one it sends from, or a return-path domain);
- `move_to` is set exactly when `after` is `move`, and is not one of the folders read (a message moved
  into a folder the poller reads would come back with a new UID on every poll);
- a mailbox's folders are non-empty, distinct names without control characters.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from petrel.errors import ConfigurationError
from petrel.ids import new_id
from petrel.mail.addresses import AddressError, validate_address
from petrel.models.records import FolderCursor, Mailbox, MailboxAfter, MailboxHealth, SmtpSecurity
from petrel.ports import AlreadyExists, Clock, MailboxStore, RecordNotFound, SecretStore, TenantStore
from petrel.services.tenants import checked_ca_bundle

# The port each security setting means when none is given: IMAPS and IMAP with STARTTLS.
DEFAULT_PORTS = {SmtpSecurity.TLS: 993, SmtpSecurity.STARTTLS: 143}
DEFAULT_FOLDERS = ("INBOX",)
MAX_HOST_LENGTH = 253
MAX_FOLDER_LENGTH = 255
_SECURITY_CHOICES = "'tls' or 'starttls'"
_AFTER_CHOICES = "'leave', 'seen' or 'move'"


@dataclass(frozen=True)
class MailboxDeps:
    tenants: TenantStore
    mailboxes: MailboxStore
    secrets: SecretStore
    clock: Clock
    secrets_prefix: str


@dataclass(frozen=True)
class MailboxSettings:
    """The settings of a mailbox an operator may change; None leaves one as it is.

    `ca_bundle=""` drops the mailbox's own CA (the system's CAs are trusted again). `move_to` goes
    with `after=move`; an `after` other than move clears it."""

    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None
    ca_bundle: str | None = None
    folders: tuple[str, ...] | None = None
    after: str | None = None
    move_to: str | None = None
    enabled: bool | None = None

    def given(self) -> bool:
        return any(value is not None for value in vars(self).values())


@dataclass(frozen=True)
class MailboxView:
    """A mailbox as `mailbox list` shows it: its record, its last poll, and how far each folder is read
    (None for a folder the poller has not read yet)."""

    mailbox: Mailbox
    health: MailboxHealth | None
    cursors: dict[str, FolderCursor | None] = field(default_factory=dict)


def secret_name(deps: MailboxDeps, tenant_id: str, mailbox_id: str) -> str:
    """Where a mailbox's IMAP password is kept (under the environment's secrets prefix, like SMTP's)."""
    return f"{deps.secrets_prefix}{tenant_id}/imap/{mailbox_id}"


def _require_tenant(deps: MailboxDeps, tenant_id: str) -> None:
    if deps.tenants.get_tenant(tenant_id) is None:
        raise ConfigurationError(f"no tenant {tenant_id!r}")


def find_mailbox(deps: MailboxDeps, tenant_id: str, mailbox_id: str) -> Mailbox:
    """A tenant's mailbox by id (ConfigurationError naming the tenant when it or the mailbox is missing)."""
    _require_tenant(deps, tenant_id)
    mailbox = deps.mailboxes.get_mailbox(tenant_id, mailbox_id)
    if mailbox is None:
        raise ConfigurationError(f"no mailbox {mailbox_id!r} for tenant {tenant_id!r}")
    return mailbox


def _address(value: str) -> str:
    try:
        return validate_address(value)
    except AddressError as exc:
        raise ConfigurationError(f"the mailbox address {exc}") from exc


def _host(value: str) -> str:
    host = value.strip()
    if not host:
        raise ConfigurationError("a mailbox needs its IMAP host")
    if len(host) > MAX_HOST_LENGTH or any(c.isspace() or not c.isprintable() for c in host):
        raise ConfigurationError(f"{value!r} is not a host name or address")
    return host


def _security(value: str) -> SmtpSecurity:
    try:
        return SmtpSecurity(value)
    except ValueError:
        raise ConfigurationError(f"security must be {_SECURITY_CHOICES}, not {value!r}") from None


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ConfigurationError(f"the port must be between 1 and 65535, not {value}")
    return value


def _username(value: str) -> str:
    if not value.strip() or any(not c.isprintable() for c in value):
        raise ConfigurationError("the username must be non-empty printable text")
    return value


def _folder(value: str, what: str = "a folder name") -> str:
    """An IMAP folder name: not blank, no control characters (they cannot travel in an IMAP command)."""
    if not value.strip():
        raise ConfigurationError(f"{what} must not be empty")
    if len(value) > MAX_FOLDER_LENGTH or any(not c.isprintable() for c in value):
        raise ConfigurationError(f"{what} {value!r} is not a usable IMAP folder name")
    return value


def _folders(values: tuple[str, ...]) -> tuple[str, ...]:
    if not values:
        raise ConfigurationError("a mailbox needs at least one folder to read")
    folders = tuple(_folder(value) for value in values)
    if len(set(folders)) != len(folders):
        raise ConfigurationError(f"a folder is named twice in {', '.join(folders)}")
    return folders


def _after(value: str) -> MailboxAfter:
    try:
        return MailboxAfter(value)
    except ValueError:
        raise ConfigurationError(f"after must be {_AFTER_CHOICES}, not {value!r}") from None


def _disposal(after: MailboxAfter, move_to: str | None, folders: tuple[str, ...]) -> str | None:
    """The `move_to` that goes with `after` (the invariant of the module docstring)."""
    if after is not MailboxAfter.MOVE:
        if move_to is not None:
            raise ConfigurationError("a move-to folder goes with after 'move' only")
        return None
    if move_to is None:
        raise ConfigurationError("after 'move' needs the folder to move to (move-to)")
    folder = _folder(move_to, "the move-to folder")
    if folder in folders:
        raise ConfigurationError(f"the move-to folder {folder!r} is one the mailbox reads: it would be read again")
    return folder


def _password(value: str) -> str:
    if not value:
        raise ConfigurationError("a mailbox needs its IMAP password")
    return value


def _require_own_domain(deps: MailboxDeps, tenant_id: str, address: str) -> None:
    """The address's domain must be one the tenant sends from or takes bounces at: mail Petrel sends to
    a domain where the tenant has a mailbox is delivered into it locally, so a mailbox elsewhere (say,
    at a public provider) would capture the tenant's mail to everyone there."""
    domain = address.rpartition("@")[2].lower()
    own = {name for d in deps.tenants.list_domains(tenant_id) for name in (d.domain, d.return_path_domain)}
    if domain not in own:
        raise ConfigurationError(
            f"{domain} is not a domain of tenant {tenant_id!r} (nor a return-path domain): "
            "add it with `domain add` first"
        )


def _refuse_same_address(deps: MailboxDeps, tenant_id: str, address: str) -> None:
    for existing in deps.mailboxes.list_mailboxes(tenant_id):
        if existing.address.lower() == address.lower():
            raise ConfigurationError(
                f"tenant {tenant_id!r} already has a mailbox for {existing.address} ({existing.mailbox_id}); "
                "change it with `mailbox set` or `mailbox set-password`"
            )


def add_mailbox(
    deps: MailboxDeps,
    tenant_id: str,
    *,
    address: str,
    host: str,
    password: str,
    security: str = SmtpSecurity.TLS.value,
    port: int | None = None,
    username: str | None = None,
    folders: tuple[str, ...] = DEFAULT_FOLDERS,
    after: str = MailboxAfter.LEAVE.value,
    move_to: str | None = None,
    ca_bundle: str | None = None,
) -> Mailbox:
    """Register a mailbox for the poller; its password goes to Secrets Manager only."""
    mailbox = new_mailbox(
        deps,
        tenant_id,
        address=address,
        host=host,
        security=security,
        port=port,
        username=username,
        folders=folders,
        after=after,
        move_to=move_to,
        ca_bundle=ca_bundle,
    )
    save_new_mailbox(deps, mailbox, password)
    return mailbox


def new_mailbox(
    deps: MailboxDeps,
    tenant_id: str,
    *,
    address: str,
    host: str,
    security: str = SmtpSecurity.TLS.value,
    port: int | None = None,
    username: str | None = None,
    folders: tuple[str, ...] = DEFAULT_FOLDERS,
    after: str = MailboxAfter.LEAVE.value,
    move_to: str | None = None,
    ca_bundle: str | None = None,
) -> Mailbox:
    """A new mailbox with every setting checked, written nowhere yet (so the CLI asks for the password
    only once the rest is known to be right): `save_new_mailbox` stores it."""
    _require_tenant(deps, tenant_id)
    mailbox_address = _address(address)
    sec = _security(security)
    read = _folders(folders)
    disposal = _after(after)
    mailbox_id = new_id("mbx")
    mailbox = Mailbox(
        tenant_id=tenant_id,
        mailbox_id=mailbox_id,
        address=mailbox_address,
        host=_host(host),
        port=_port(DEFAULT_PORTS[sec] if port is None else port),
        security=sec,
        username=_username(mailbox_address if username is None else username),
        secret_name=secret_name(deps, tenant_id, mailbox_id),
        ca_bundle=checked_ca_bundle(ca_bundle),
        folders=read,
        after=disposal,
        move_to=_disposal(disposal, move_to, read),
        created_at=deps.clock.now(),
    )
    _require_own_domain(deps, tenant_id, mailbox_address)
    _refuse_same_address(deps, tenant_id, mailbox_address)
    return mailbox


def save_new_mailbox(deps: MailboxDeps, mailbox: Mailbox, password: str) -> None:
    """Store a mailbox made by `new_mailbox` and its password.

    The secret is written first: a mailbox whose record exists always has its password (a create that
    fails takes the secret back). The address is checked again just before the write."""
    secret = _password(password)
    _refuse_same_address(deps, mailbox.tenant_id, mailbox.address)
    deps.secrets.put_secret(mailbox.secret_name, secret)
    try:
        deps.mailboxes.create_mailbox(mailbox)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            deps.secrets.delete_secret(mailbox.secret_name)
        if isinstance(exc, AlreadyExists):  # its id, or its address, taken meanwhile: nothing was stored
            raise ConfigurationError(f"{exc}; see `mailbox list`") from exc
        raise


def update_mailbox(deps: MailboxDeps, tenant_id: str, mailbox_id: str, settings: MailboxSettings) -> Mailbox:
    """Change some settings of a mailbox. Its address (its identity) and password (`set_password`)
    are not settings; the poller sees the change at its next run."""
    if not settings.given():
        raise ConfigurationError("nothing to change: give at least one setting")
    mailbox = find_mailbox(deps, tenant_id, mailbox_id)
    security = mailbox.security if settings.security is None else _security(settings.security)
    port = settings.port
    if port is None and security is not mailbox.security and mailbox.port == DEFAULT_PORTS[mailbox.security]:
        port = DEFAULT_PORTS[security]  # the port followed the old security's default: follow the new one
    folders = mailbox.folders if settings.folders is None else _folders(settings.folders)
    after = mailbox.after if settings.after is None else _after(settings.after)
    # A move-to folder given is checked against `after`; else a mailbox that still moves keeps its folder
    # (checked against the new folders too), and one that no longer moves drops it.
    move_to = (
        settings.move_to if settings.move_to is not None else mailbox.move_to if after is MailboxAfter.MOVE else None
    )
    changes: dict[str, object] = {
        "security": security,
        "folders": folders,
        "after": after,
        "move_to": _disposal(after, move_to, folders),
    }
    if settings.host is not None:
        changes["host"] = _host(settings.host)
    if port is not None:
        changes["port"] = _port(port)
    if settings.username is not None:
        changes["username"] = _username(settings.username)
    if settings.ca_bundle is not None:
        changes["ca_bundle"] = checked_ca_bundle(settings.ca_bundle)
    if settings.enabled is not None:
        changes["enabled"] = settings.enabled
    updated = mailbox.model_copy(update=changes)
    deps.mailboxes.put_mailbox(updated)
    return updated


def set_password(deps: MailboxDeps, tenant_id: str, mailbox_id: str, password: str) -> Mailbox:
    """Rotate the mailbox's IMAP password (its secret is replaced, or made again if it was lost)."""
    mailbox = find_mailbox(deps, tenant_id, mailbox_id)
    deps.secrets.put_secret(mailbox.secret_name, _password(password))
    return mailbox


def remove_mailbox(deps: MailboxDeps, tenant_id: str, mailbox_id: str) -> None:
    """Remove the mailbox, its password, its cursors and its health.

    The secret goes first: a removal that stops half-way leaves a mailbox record (which the operator
    sees and can remove again), never a password no record names."""
    mailbox = find_mailbox(deps, tenant_id, mailbox_id)
    with contextlib.suppress(RecordNotFound):  # gone already: a removal that stopped half-way
        deps.secrets.delete_secret(mailbox.secret_name)
    try:
        deps.mailboxes.delete_mailbox(tenant_id, mailbox_id)
    except RecordNotFound as exc:  # a concurrent removal won
        raise ConfigurationError(f"no mailbox {mailbox_id!r} for tenant {tenant_id!r}") from exc


def list_mailboxes(deps: MailboxDeps, tenant_id: str) -> list[MailboxView]:
    """The tenant's mailboxes, each with its last poll and each folder's cursor."""
    _require_tenant(deps, tenant_id)
    return [
        MailboxView(
            mailbox=mailbox,
            health=deps.mailboxes.get_health(tenant_id, mailbox.mailbox_id),
            cursors={
                folder: deps.mailboxes.get_cursor(tenant_id, mailbox.mailbox_id, folder) for folder in mailbox.folders
            },
        )
        for mailbox in deps.mailboxes.list_mailboxes(tenant_id)
    ]


def mailbox_password(deps: MailboxDeps, mailbox: Mailbox) -> str:
    """The stored password (for `mailbox test`); a ConfigurationError when it is missing."""
    try:
        return deps.secrets.get_secret(mailbox.secret_name)
    except RecordNotFound as exc:
        raise ConfigurationError(
            f"mailbox {mailbox.mailbox_id} has no stored password: set one with `mailbox set-password`"
        ) from exc
