"""The `/v1` routes on Powertools' resolver: each route is a closure over the services it calls.

`register_routes(app, services)` adds every route to `app` and returns the `Operations` table: for
each operation its method, path, the scope its API key needs and whether it takes a JSON body. The
application (petrel.api.app) reads that table before the resolver runs: a caller's scope is checked
before its body is validated (a 403 beats a 422), and every authenticated POST takes an
`Idempotency-Key` whose replay covers the validation problems too.

Request bodies, query and path parameters are validated by Powertools from the annotations below
(the same pydantic models the OpenAPI document is generated from). The batch is the exception: its
emails are each accepted or refused alone, so its envelope is validated here and each email by the
route (`BatchSendRequest.emails` skips validation, and keeps its schema for the document).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from pydantic import BaseModel, ValidationError

from petrel.api import examples, openapi
from petrel.api.deps import ApiServices
from petrel.api.http import JSON, PROBLEM_JSON, body_bytes, is_json, problem_body, validation_problem, within
from petrel.errors import (
    InternalError,
    InvalidRequest,
    MalformedBody,
    NotFound,
    PetrelError,
    QuotaExceeded,
    UnsupportedMediaType,
)
from petrel.models.api import (
    MAX_BATCH,
    RAW_MESSAGE,
    BatchItemResult,
    BatchSendRequest,
    BatchSendResponse,
    CancelResponse,
    CreateDomainRequest,
    DomainList,
    DomainView,
    EmailView,
    InboundAccepted,
    InboundList,
    InboundView,
    MessageList,
    MessageView,
    Problem,
    SendEmailRequest,
    SendEmailResponse,
    SuppressionList,
    SuppressionRequest,
    SuppressionView,
    UpdateDomainRequest,
)
from petrel.models.attachments import AttachmentUpload, CreateAttachmentRequest
from petrel.models.inbound import InboundKind
from petrel.models.records import MessageStatus, Scope, Tenant
from petrel.services import attachments, cancel, domains, inbound_api, query, submit, suppressions, suspension

# The scopes an operation can need, one per name of records.SCOPES (typed `Scope`: a name that is
# not a scope fails mypy; tests/unit/test_scopes.py checks that every scope has its constant).
SEND: Final[Scope] = "send"
READ: Final[Scope] = "read"
DOMAINS: Final[Scope] = "domains"
SUPPRESSIONS: Final[Scope] = "suppressions"
INBOUND: Final[Scope] = "inbound"
WEBHOOKS: Final[Scope] = "webhooks"  # no route yet: webhooks are configured by a later issue
PAGE_MAX = query.MAX_PAGE
PAGE_DEFAULT = query.DEFAULT_PAGE

# Problems the operations can answer, described once; each operation lists the statuses it really gives.
_PROBLEM_TEXT = {
    400: "The body is not JSON, or not sent as application/json",
    401: "No tenant: the request did not pass the API key authorizer",
    403: "The API key lacks the scope this operation needs",
    404: "Not found",
    409: "The Idempotency-Key was used with another request, or its first request is still running",
    413: "The request body is over 4 MiB, or the message over the tenant's size limit",
    415: "The body is not sent with the media type this operation takes",
    422: "The request is not valid: `errors` lists each failure, with a JSON pointer into the body or "
    "the name of the parameter",
    429: "The tenant's daily or per-second recipient quota has no room now: nothing was stored; retry after "
    "`Retry-After` seconds (also `retry_after` in the body)",
    500: "Internal error (the detail names the request id; nothing was accepted)",
}
_AUTHENTICATED = (401, 403, 500)
_WITH_BODY = (400, 409, 413, 422)
# A send can also be refused for its tenant: suspended (403), or over a quota (429).
_SENDING = (429,)
_SEND_403 = (
    "The API key lacks the `send` scope, or its tenant is suspended (type `urn:petrel:problem:tenant-suspended`, "
    "the reason in `detail`): nothing was stored"
)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Replays this request's first response (byte for byte, with `Idempotent-Replayed: true`) "
        "for 24 hours; the same key with another body is a 409. 1-255 printable characters.",
    ),
]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
DomainName = Annotated[str, Path(description="The domain name, e.g. `acme.example`")]
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description=f"Page size, 1-{PAGE_MAX}")]


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str  # Powertools' form: /v1/emails/<id>
    scope: Scope | None  # None: public
    takes_body: bool
    media: str = JSON  # the media type of the body it takes (JSON: also `+json` types, or none named)
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = "^" + re.sub(r"<(\w+)>", r"[^/]+", self.rule) + "/?$"
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def idempotent(self) -> bool:
        """Every authenticated POST takes an `Idempotency-Key`."""
        return self.method == "POST" and self.scope is not None

    def check_media(self, media: str) -> None:
        """The one place that decides whether a request's body has a media type this operation takes
        (asked by the front door before the body is read). A JSON operation refuses anything but JSON
        as a body that is not JSON (400); another takes exactly its own type (anything else is a 415)."""
        if not self.takes_body:
            return
        if self.media == JSON:
            if not is_json(media):
                raise MalformedBody(f"send the body as {JSON}, not {media}")
        elif media != self.media:
            raise UnsupportedMediaType(f"send the body as {self.media}, not {media or 'without a Content-Type'}")


class Operations:
    """The operations registered on the resolver, for what must be decided before it runs."""

    def __init__(self) -> None:
        self.all: list[Operation] = []

    def find(self, method: str, path: str) -> Operation | None:
        return next((o for o in self.all if o.method == method and o.pattern.match(path)), None)

    def allows(self, path: str) -> list[str]:
        """The methods some operation takes on `path` (for a 405 rather than a 404)."""
        return sorted({o.method for o in self.all if o.pattern.match(path)})


def responses(
    success: int,
    text: str,
    problems: Sequence[int],
    *,
    model: type[BaseModel] | None = None,
    example: Any = None,
    **on: str,
) -> dict[int, Any]:
    """An operation's responses: its success (`model`, with `example`; no content for a 204) and each
    problem it can answer, with an example. `on_404="..."` words a status for this operation."""
    ok: dict[str, Any] = {"description": text, "content": {}}
    if model is not None:
        ok["content"] = {"application/json": {"model": model, "examples": {"example": {"value": example}}}}
    table: dict[int, Any] = {success: ok}
    for status in sorted(set(problems)):
        table[status] = {
            "description": on.get(f"on_{status}", _PROBLEM_TEXT[status]),
            "content": {
                PROBLEM_JSON: {"model": Problem, "examples": {"problem": {"value": examples.PROBLEMS[status]}}}
            },
        }
        if status == QuotaExceeded.status:
            table[status]["headers"] = RETRY_AFTER_HEADER
    return table


RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Seconds until the quota's next window starts (as `retry_after` in the body)",
        "schema": {"type": "integer", "minimum": 1},
    }
}


# The response headers of an authenticated POST's answers, but for a 401 or 403 (answered before the
# key is read): every answer given for a request with an `Idempotency-Key` is kept and echoes the key.
IDEMPOTENCY_HEADERS = {
    "Idempotency-Key": {
        "description": "The request's `Idempotency-Key`, under which this answer is kept for 24 hours "
        "(present when the request sent one)",
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this answer is the kept answer of an earlier request with the same key",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
_BEFORE_THE_KEY = (401, 403)


def with_idempotency_headers(table: dict[int, Any]) -> dict[int, Any]:
    """`table` with the idempotency response headers on each answer that can carry them."""
    return {
        status: response
        if status in _BEFORE_THE_KEY
        else {**response, "headers": {**response.get("headers", {}), **IDEMPOTENCY_HEADERS}}
        for status, response in table.items()
    }


def batch_quota_exceeded(refused: Sequence[BatchItemResult], total: int) -> QuotaExceeded:
    """The 429 of a batch that accepted nothing because of quotas: the soonest retry of its emails."""
    extras = [(r.error.model_extra or {}) if r.error else {} for r in refused]
    soonest = min(extras, key=lambda extra: int(extra.get("retry_after") or 1))
    return QuotaExceeded(
        f"no email of the batch was accepted: {len(refused)} of {total} are over the tenant's quota",
        retry_after=int(soonest.get("retry_after") or 1),
        quota=str(soonest.get("quota") or ""),
        limit=int(soonest.get("limit") or 0),
    )


def register_routes(app: APIGatewayRestResolver, services: ApiServices) -> Operations:
    """Every `/v1` route of the API on `app`, as closures over `services`."""
    ops = Operations()
    log = services.ports.telemetry.logger

    def route(
        method: str,
        rule: str,
        *,
        operation_id: str,
        scope: Scope | None,
        status: int,
        summary: str,
        table: dict[int, Any],
        takes_body: bool = False,
        media: str = JSON,
        raw_body: dict[str, Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a route and its `Operation`. `operation_id` is what client generators name the
        method after: stable and readable, never derived from the handler's name or path. `raw_body`:
        the OpenAPI request body of an operation that reads its body itself (not a pydantic model),
        which petrel.api.openapi.render puts in place."""
        operation = Operation(method, rule, scope, takes_body, media)
        ops.all.append(operation)
        return app.route(
            rule,
            method,
            summary=summary,
            operation_id=operation_id,
            status_code=status,
            responses=with_idempotency_headers(table) if operation.idempotent else table,
            security=[{"bearer": [scope]}] if scope else None,
            openapi_extensions={openapi.RAW_BODY_EXTENSION: raw_body} if raw_body else None,
        )

    def caller() -> tuple[str, str]:
        """The tenant (the authorizer's context: never the body) and the request's path."""
        authorizer = (app.current_event.raw_event.get("requestContext") or {}).get("authorizer") or {}
        return str(authorizer.get("tenant_id") or ""), app.current_event.path

    def tenant(tenant_id: str) -> Tenant:
        found = services.ports.tenants.get_tenant(tenant_id)
        if found is None:
            raise NotFound("the tenant of this API key no longer exists")
        return found

    no_tenant = "The API key's tenant no longer exists"

    @route(
        "POST",
        "/v1/emails",
        operation_id="sendEmail",
        scope=SEND,
        status=202,
        summary="Send an email",
        takes_body=True,
        table=responses(
            202,
            "Accepted: one message per recipient (To, Cc and Bcc), each queued or scheduled",
            _AUTHENTICATED + _WITH_BODY + _SENDING + (404,),
            model=SendEmailResponse,
            example=examples.SENT,
            on_404=no_tenant,
            on_403=_SEND_403,
        ),
    )
    def send_email(
        body: Annotated[
            SendEmailRequest,
            Body(
                openapi_examples={
                    "now": {"summary": "Send now", "value": examples.SEND_EMAIL},
                    "later": {"summary": "Schedule, with a Cc", "value": examples.SEND_EMAIL_LATER},
                    "uploaded": {"summary": "An uploaded attachment", "value": examples.SEND_EMAIL_UPLOADED},
                }
            ),
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> SendEmailResponse:
        tenant_id, _ = caller()
        return submit.submit_email(services.submit, tenant(tenant_id), body)

    def batch_item(
        owner: Tenant, index: int, item: Any, reads: submit.TenantReads, request_id: str
    ) -> submit.Accepted | BatchItemResult:
        """One email of a batch: stored (its jobs queued with the others'), or its own problem. Nothing
        one email does fails the others."""
        try:
            try:
                email = SendEmailRequest.model_validate(item)
            except ValidationError as exc:
                raise validation_problem(exc, f"email at index {index}") from exc
            return submit.accept_email(services.submit, owner, email, reads)
        except PetrelError as error:
            failure = within(error, f"/emails/{index}")
        except Exception:
            log.exception("a batch item failed", extra={"index": index, "tenant_id": owner.tenant_id})
            failure = InternalError(f"an internal error occurred for the email at index {index} (request {request_id})")
        return BatchItemResult(index=index, status=failure.status, error=Problem(**problem_body(failure)))

    @route(
        "POST",
        "/v1/emails/batch",
        operation_id="sendBatch",
        scope=SEND,
        status=202,
        summary="Send up to 100 emails, each accepted or refused on its own",
        takes_body=True,
        table=responses(
            202,
            "At least one email was accepted: one result per email, in order (202, or that email's problem: "
            "each email takes its recipients from the quotas alone, so some may be 429 while others pass)",
            _AUTHENTICATED + _WITH_BODY + _SENDING + (404,),
            model=BatchSendResponse,
            example=examples.BATCH_SENT,
            on_404=no_tenant,
            on_403=_SEND_403,
            on_429="No email was accepted and at least one was refused for a quota: retry after `Retry-After` "
            "seconds (the soonest any of them may pass)",
            on_422="No email of the batch is valid (or the body is not a list of 1 to 100 emails): `errors` "
            "points into each",
        ),
    )
    def send_batch(
        body: Annotated[
            BatchSendRequest, Body(openapi_examples={"batch": {"summary": "Two emails", "value": examples.BATCH}})
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> BatchSendResponse:
        tenant_id, _ = caller()
        items: object = body.emails  # raw JSON: each email is validated alone
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequest(
                f"the body must be an object with `emails`: a list of 1 to {MAX_BATCH} emails",
                errors=[{"pointer": "/emails", "detail": f"a list of 1 to {MAX_BATCH} emails"}],
            )
        owner = tenant(tenant_id)
        suspension.check_not_suspended(owner)  # the whole batch: a 403, not one per email
        reads = submit.TenantReads()  # the emails of a batch share their tenant's domains and servers
        request_id = app.current_event.request_context.request_id
        outcomes = [batch_item(owner, index, item, reads, request_id) for index, item in enumerate(items)]
        stored = [(index, o) for index, o in enumerate(outcomes) if isinstance(o, submit.Accepted)]
        statuses = submit.enqueue_together(services.submit, [accepted for _, accepted in stored])
        results = [o for o in outcomes if isinstance(o, BatchItemResult)]
        for (index, accepted), queued in zip(stored, statuses, strict=True):
            results.append(BatchItemResult(index=index, status=202, email=accepted.response(queued)))
        results.sort(key=lambda r: r.index)
        if any(r.status == 202 for r in results):
            return BatchSendResponse(results=results)
        if any(r.status >= 500 for r in results):  # nothing was accepted: the whole request may be retried
            raise InternalError(f"no email of the batch could be accepted (request {request_id})")
        over_quota = [r for r in results if r.status == QuotaExceeded.status and r.error is not None]
        if over_quota:  # nothing was accepted, and waiting would let some through: the batch is a 429
            raise batch_quota_exceeded(over_quota, len(results))
        errors: list[dict[str, str]] = []
        for result in results:
            assert result.error is not None
            listed = (result.error.model_extra or {}).get("errors") or []
            errors += listed or [{"pointer": f"/emails/{result.index}", "detail": result.error.detail}]
        raise InvalidRequest(f"none of the {len(results)} emails is valid", errors=errors)

    @route(
        "POST",
        "/v1/attachments",
        operation_id="createAttachment",
        scope=SEND,
        status=201,
        summary="Declare an attachment and get a short-lived URL to upload it to; reference it from an email by id",
        takes_body=True,
        table=responses(
            201,
            "Declared: PUT the file to `upload_url` with `upload_headers`, then reference `id`",
            _AUTHENTICATED + _WITH_BODY + (404,),
            model=AttachmentUpload,
            example=examples.ATTACHMENT_UPLOAD,
            on_404=no_tenant,
            on_403=_SEND_403,
            on_413="The file is larger than the tenant's message size allows",
        ),
    )
    def create_attachment(
        body: Annotated[
            CreateAttachmentRequest, Body(openapi_examples={"pdf": {"summary": "A PDF", "value": examples.ATTACHMENT}})
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> AttachmentUpload:
        tenant_id, _ = caller()
        return attachments.create_attachment(services.attachments, tenant(tenant_id), body)

    @route(
        "GET",
        "/v1/emails",
        operation_id="listEmails",
        scope=READ,
        status=200,
        summary="List messages (one per recipient), newest first",
        table=responses(
            200,
            "A page of messages; `next_cursor` fetches the next. Filtered by `queued`, `sending`, `relayed` "
            "or `delivered`, a page examines a bounded number of messages (10 x `limit`) and may hold fewer "
            "than `limit`, even none, with a `next_cursor` to go on: the listing ends when `next_cursor` "
            "is absent, not when a page is short",
            (*_AUTHENTICATED, 422),
            model=MessageList,
            example=examples.MESSAGES,
        ),
    )
    def list_emails(
        limit: Limit = PAGE_DEFAULT,
        status: Annotated[MessageStatus | None, Query(description="Only messages in this status")] = None,
        cursor: Cursor = None,
    ) -> MessageList:
        tenant_id, _ = caller()
        wanted = status.value if status is not None else None
        return query.list_messages(services.ports.messages, tenant_id, status=wanted, limit=limit, cursor=cursor)

    @route(
        "GET",
        "/v1/emails/<id>",
        operation_id="getEmail",
        scope=READ,
        status=200,
        summary="An email: status per recipient, attempts, events (by its id, or by one of its messages' ids)",
        table=responses(
            200, "The email", (*_AUTHENTICATED, 404), model=EmailView, example=examples.EMAIL, on_404="No such email"
        ),
    )
    def get_email(id: str) -> EmailView:
        tenant_id, _ = caller()
        return query.get_email(services.ports.messages, tenant_id, id)

    @route(
        "GET",
        "/v1/messages/<id>",
        operation_id="getMessage",
        scope=READ,
        status=200,
        summary="One message: one recipient's copy of an email",
        table=responses(
            200,
            "The message",
            (*_AUTHENTICATED, 404),
            model=MessageView,
            example=examples.MESSAGE,
            on_404="No such message",
        ),
    )
    def get_message(id: str) -> MessageView:
        tenant_id, _ = caller()
        return query.get_message(services.ports.messages, tenant_id, id)

    @route(
        "DELETE",
        "/v1/emails/<id>",
        operation_id="cancelEmail",
        scope=SEND,
        status=200,
        summary="Cancel the recipients not yet sent (scheduled, queued or deferred)",
        table=responses(
            200,
            "What was cancelled, and what was already sending or finished",
            (*_AUTHENTICATED, 404),
            model=CancelResponse,
            example=examples.CANCELLED,
            on_404="No such email",
        ),
    )
    def cancel_email(id: str) -> CancelResponse:
        tenant_id, _ = caller()
        return cancel.cancel_email(services.cancel, tenant_id, id)

    @route(
        "GET",
        "/v1/suppressions",
        operation_id="listSuppressions",
        scope=SUPPRESSIONS,
        status=200,
        summary="List suppressed addresses",
        table=responses(
            200,
            "A page of suppressed addresses",
            (*_AUTHENTICATED, 422),
            model=SuppressionList,
            example=examples.SUPPRESSIONS,
        ),
    )
    def list_suppressions(limit: Limit = PAGE_DEFAULT, cursor: Cursor = None) -> SuppressionList:
        tenant_id, _ = caller()
        return suppressions.list_page(services.ports.suppressions, tenant_id, limit=limit, cursor=cursor)

    @route(
        "POST",
        "/v1/suppressions",
        operation_id="addSuppression",
        scope=SUPPRESSIONS,
        status=201,
        summary="Suppress an address",
        takes_body=True,
        table=responses(
            201,
            "Suppressed: Petrel will not send to it",
            (*_AUTHENTICATED, 400, 409, 413, 422),
            model=SuppressionView,
            example=examples.SUPPRESSION,
            on_409="The address is suppressed already, or the Idempotency-Key was used with another request",
        ),
    )
    def add_suppression(
        body: Annotated[
            SuppressionRequest, Body(openapi_examples={"manual": {"summary": "By hand", "value": examples.SUPPRESS}})
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> SuppressionView:
        tenant_id, _ = caller()
        return suppressions.add(services.ports.suppressions, services.ports.clock, tenant_id, body)

    @route(
        "GET",
        "/v1/suppressions/<email>",
        operation_id="getSuppression",
        scope=SUPPRESSIONS,
        status=200,
        summary="One suppressed address",
        table=responses(
            200,
            "The suppression",
            (*_AUTHENTICATED, 404, 422),
            model=SuppressionView,
            example=examples.SUPPRESSION,
            on_404="The address is not suppressed",
            on_422="`email` is not an email address",
        ),
    )
    def get_suppression(email: str) -> SuppressionView:
        tenant_id, _ = caller()
        return suppressions.get(services.ports.suppressions, tenant_id, email)

    @route(
        "DELETE",
        "/v1/suppressions/<email>",
        operation_id="removeSuppression",
        scope=SUPPRESSIONS,
        status=204,
        summary="Stop suppressing an address",
        table=responses(
            204,
            "No longer suppressed",
            (*_AUTHENTICATED, 404, 422),
            on_404="The address is not suppressed",
            on_422="`email` is not an email address",
        ),
    )
    def remove_suppression(email: str) -> Response[str]:
        tenant_id, _ = caller()
        suppressions.remove(services.ports.suppressions, tenant_id, email)
        return Response(204, None, "")

    @route(
        "POST",
        "/v1/inbound/raw",
        operation_id="pushInboundRaw",
        scope=INBOUND,
        status=202,
        summary="Push a raw incoming message (a Postfix pipe, a MailU forward): ingested as mail read from a mailbox",
        takes_body=True,
        media=RAW_MESSAGE,
        raw_body={
            "required": True,
            "description": "The raw message (RFC 5322: its header fields, a blank line, its body), byte for byte",
            "content": {
                RAW_MESSAGE: {
                    "schema": {"type": "string", "format": "binary"},
                    "examples": {"report": {"summary": "A delivery report", "value": examples.RAW_REPORT}},
                }
            },
        },
        table=responses(
            202,
            "Accepted: stored and queued for ingest; `GET /v1/inbound/{id}` shows it once ingested",
            (*_AUTHENTICATED, 404, 409, 413, 415, 422),
            model=InboundAccepted,
            example=examples.INBOUND_ACCEPTED,
            on_404=no_tenant,
            on_413="The message is over 4 MiB",
            on_415="The body is not sent as message/rfc822",
            on_422="The body is empty, or is not an email message (it does not start with header fields)",
        ),
    )
    def push_inbound_raw(idempotency_key: IdempotencyKey = None) -> InboundAccepted:
        tenant_id, _ = caller()
        tenant(tenant_id)
        return inbound_api.push_raw(services.inbound, tenant_id, body_bytes(app.current_event.raw_event))

    @route(
        "GET",
        "/v1/inbound",
        operation_id="listInbound",
        scope=INBOUND,
        status=200,
        summary="List incoming mail (reports, complaints, replies, other mail), newest first",
        table=responses(
            200,
            "A page of incoming messages, without their text and HTML; `next_cursor` fetches the next",
            (*_AUTHENTICATED, 422),
            model=InboundList,
            example=examples.INBOUND_LIST,
        ),
    )
    def list_inbound(
        limit: Limit = PAGE_DEFAULT,
        kind: Annotated[InboundKind | None, Query(description="Only incoming mail of this kind")] = None,
        email_id: Annotated[
            str | None, Query(description="Only incoming mail about this email (`em_...`): its reports and replies")
        ] = None,
        cursor: Cursor = None,
    ) -> InboundList:
        tenant_id, _ = caller()
        return inbound_api.list_inbound(
            services.inbound, tenant_id, kind=kind, email_id=email_id, limit=limit, cursor=cursor
        )

    @route(
        "GET",
        "/v1/inbound/<id>",
        operation_id="getInbound",
        scope=INBOUND,
        status=200,
        summary="One incoming message: its text, HTML, attachments (with short-lived links), report and original",
        table=responses(
            200,
            "The incoming message",
            (*_AUTHENTICATED, 404),
            model=InboundView,
            example=examples.INBOUND,
            on_404="No such incoming message (or not ingested yet)",
        ),
    )
    def get_inbound(id: str) -> InboundView:
        tenant_id, _ = caller()
        return inbound_api.get_inbound(services.inbound, tenant_id, id)

    # -- sending domains (scope `domains`): another tenant's domain is a 404, never revealed

    @route(
        "POST",
        "/v1/domains",
        operation_id="createDomain",
        scope=DOMAINS,
        status=201,
        summary="Add a sending domain: its DKIM key is made, and the DNS records to publish are answered",
        takes_body=True,
        table=responses(
            201,
            "Created: publish `records`, then `POST /v1/domains/{domain}/verify`",
            _AUTHENTICATED + _WITH_BODY + (404,),
            model=DomainView,
            example=examples.DOMAIN,
            on_404=no_tenant,
            on_409="The domain is this tenant's already, or another tenant's; or the Idempotency-Key was used "
            "with another request",
        ),
    )
    def create_domain(
        body: Annotated[
            CreateDomainRequest,
            Body(openapi_examples={"bounces": {"summary": "A bounce subdomain", "value": examples.CREATE_DOMAIN}}),
        ],
        idempotency_key: IdempotencyKey = None,
    ) -> DomainView:
        tenant_id, _ = caller()
        owner = tenant(tenant_id)
        return domains.view(domains.create_domain(services.domains, owner, body), owner)

    @route(
        "GET",
        "/v1/domains",
        operation_id="listDomains",
        scope=DOMAINS,
        status=200,
        summary="List the sending domains, each with its records as last verified",
        table=responses(200, "The sending domains", (*_AUTHENTICATED, 404), model=DomainList, example=examples.DOMAINS),
    )
    def list_domains() -> DomainList:
        tenant_id, _ = caller()
        owner = tenant(tenant_id)
        return DomainList(data=[domains.view(d, owner) for d in domains.list_domains(services.domains, tenant_id)])

    @route(
        "GET",
        "/v1/domains/<domain>",
        operation_id="getDomain",
        scope=DOMAINS,
        status=200,
        summary="A sending domain: its status, the records to publish and what the last verification found",
        table=responses(
            200,
            "The domain",
            (*_AUTHENTICATED, 404),
            model=DomainView,
            example=examples.DOMAIN,
            on_404="No such sending domain",
        ),
    )
    def get_domain(domain: DomainName) -> DomainView:
        tenant_id, _ = caller()
        return domains.view(domains.get_domain(services.domains, tenant_id, domain), tenant(tenant_id))

    @route(
        "PATCH",
        "/v1/domains/<domain>",
        operation_id="updateDomain",
        scope=DOMAINS,
        status=200,
        summary="Change a sending domain's return path, SPF, MX, receiving or DMARC reports (keys: rotate)",
        takes_body=True,
        table=responses(
            200,
            "The domain with its records recomputed: a new or changed required record is `pending`, and so is "
            "the domain until it is verified again",
            _AUTHENTICATED + _WITH_BODY + (404,),
            model=DomainView,
            example=examples.DOMAIN,
            on_404="No such sending domain",
            on_409="The domain changed too often while the request ran, or it has no DKIM key yet (verify it)",
        ),
    )
    def update_domain(
        domain: DomainName,
        body: Annotated[
            UpdateDomainRequest,
            Body(openapi_examples={"bounces": {"summary": "A bounce subdomain", "value": examples.UPDATE_DOMAIN}}),
        ],
    ) -> DomainView:
        tenant_id, _ = caller()
        return domains.view(domains.update_domain(services.domains, tenant_id, domain, body), tenant(tenant_id))

    @route(
        "DELETE",
        "/v1/domains/<domain>",
        operation_id="deleteDomain",
        scope=DOMAINS,
        status=204,
        summary="Remove a sending domain and its DKIM keys (mail from it is refused from now on)",
        table=responses(204, "Removed", (*_AUTHENTICATED, 404), on_404="No such sending domain"),
    )
    def delete_domain(domain: DomainName) -> Response[str]:
        tenant_id, _ = caller()
        domains.delete_domain(services.domains, tenant_id, domain)
        return Response(204, None, "")

    @route(
        "POST",
        "/v1/domains/<domain>/verify",
        operation_id="verifyDomain",
        scope=DOMAINS,
        status=200,
        summary="Look up every record of the domain now: each is verified, missing, wrong or a warning",
        table=responses(
            200,
            "The domain as verified now (`status` is `verified` once SPF and DKIM are)",
            (*_AUTHENTICATED, 404, 409),
            model=DomainView,
            example=examples.DOMAIN,
            on_404="No such sending domain",
        ),
    )
    def verify_domain(domain: DomainName, idempotency_key: IdempotencyKey = None) -> DomainView:
        tenant_id, _ = caller()
        return domains.view(domains.verify(services.domains, tenant_id, domain), tenant(tenant_id))

    @route(
        "POST",
        "/v1/domains/<domain>/rotate",
        operation_id="rotateDomainKey",
        scope=DOMAINS,
        status=200,
        summary="Start a DKIM key rotation: a new key under a new selector to publish; it signs once verified",
        table=responses(
            200,
            "The domain with its `next` key's record (not required); publish it, then verify",
            (*_AUTHENTICATED, 404, 409),
            model=DomainView,
            example=examples.DOMAIN,
            on_404="No such sending domain",
            on_409="A rotation is in progress already, or MailU signs the domain; or the Idempotency-Key was "
            "used with another request",
        ),
    )
    def rotate_domain_key(domain: DomainName, idempotency_key: IdempotencyKey = None) -> DomainView:
        tenant_id, _ = caller()
        return domains.view(domains.rotate_key(services.domains, tenant_id, domain), tenant(tenant_id))

    return ops


def describe(operations: Operations) -> Mapping[tuple[str, str], Operation]:
    """The operations by (method, OpenAPI path): `/v1/emails/{id}` for `/v1/emails/<id>`."""
    return {(o.method, re.sub(r"<(\w+)>", r"{\1}", o.rule)): o for o in operations.all}
