"""The OpenAPI document: the committed copy is what the code generates, every operation of the app is
in it, every answer the API gives is documented, and every example holds to its model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from petrel import resources
from petrel.api import routes
from petrel.api.app import ApiApplication
from petrel.api.openapi import DOCS_PATH, DOCUMENT_PATH, PUBLIC_PATHS, document
from petrel.models import api as api_models
from petrel.models import attachments as attachment_models
from petrel.models.inbound import (
    InboundAttachment,
    InboundContent,
    InboundKind,
    InboundRecord,
    InboundReport,
    inbound_id,
    raw_digest,
)
from tests.fakes import FakeWorld, Seeded
from tests.unit.api_fakes import Api, FakeApiContainer, event

COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"
DOC = document()


def _models() -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for module in (api_models, attachment_models):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__:
                found[value.__name__] = value
    return found


MODELS = _models()


def test_committed_document_matches_the_code() -> None:
    assert COMMITTED.exists(), "openapi.json is missing at the repository root: run `make openapi`"
    committed = json.dumps(json.loads(COMMITTED.read_text()), indent=2, sort_keys=True)
    generated = json.dumps(DOC, indent=2, sort_keys=True)
    assert committed == generated, "openapi.json is out of date with the API models: run `make openapi` and commit it"


def test_every_operation_of_the_app_is_documented_with_its_scope(world: FakeWorld) -> None:
    app = ApiApplication(FakeApiContainer(world))
    served = routes.describe(app.operations)
    documented = {(method.upper(), path) for path, ops in DOC["paths"].items() for method in ops}

    swagger_ui = {("GET", path) for path in PUBLIC_PATHS - {DOCUMENT_PATH}}  # the page and its assets
    assert documented == set(served) - swagger_ui
    for (method, path), operation in served.items():
        if (method, path) in documented:
            security = DOC["paths"][path][method.lower()].get("security")
            assert security == ([{"bearer": [operation.scope]}] if operation.scope else None), (method, path)


def test_every_operation_has_a_readable_operation_id() -> None:
    """Client generators name their methods after these: camelCase verbs, one per operation."""
    ids = {
        (method.upper(), path): operation.get("operationId")
        for path, ops in DOC["paths"].items()
        for method, operation in ops.items()
    }
    assert ids == {
        ("POST", "/v1/emails"): "sendEmail",
        ("POST", "/v1/emails/batch"): "sendBatch",
        ("POST", "/v1/attachments"): "createAttachment",
        ("GET", "/v1/emails"): "listEmails",
        ("GET", "/v1/emails/{id}"): "getEmail",
        ("GET", "/v1/messages/{id}"): "getMessage",
        ("DELETE", "/v1/emails/{id}"): "cancelEmail",
        ("GET", "/v1/suppressions"): "listSuppressions",
        ("POST", "/v1/suppressions"): "addSuppression",
        ("GET", "/v1/suppressions/{email}"): "getSuppression",
        ("DELETE", "/v1/suppressions/{email}"): "removeSuppression",
        ("POST", "/v1/inbound/raw"): "pushInboundRaw",
        ("GET", "/v1/inbound"): "listInbound",
        ("GET", "/v1/inbound/{id}"): "getInbound",
        ("POST", "/v1/domains"): "createDomain",
        ("GET", "/v1/domains"): "listDomains",
        ("GET", "/v1/domains/{domain}"): "getDomain",
        ("PATCH", "/v1/domains/{domain}"): "updateDomain",
        ("DELETE", "/v1/domains/{domain}"): "deleteDomain",
        ("POST", "/v1/domains/{domain}/verify"): "verifyDomain",
        ("POST", "/v1/domains/{domain}/rotate"): "rotateDomainKey",
        ("GET", "/v1/openapi.json"): "getOpenApi",
    }


def test_every_authenticated_post_documents_its_idempotency_headers(world: FakeWorld) -> None:
    """The request header as HTTP writes it, and the response headers on every answer given after the
    key is read (all but 401 and 403); no other operation mentions them."""
    app = ApiApplication(FakeApiContainer(world))
    idempotent = {key for key, operation in routes.describe(app.operations).items() if operation.idempotent}
    assert {path for _, path in idempotent} == {
        "/v1/emails",
        "/v1/emails/batch",
        "/v1/attachments",
        "/v1/suppressions",
        "/v1/inbound/raw",
        "/v1/domains",
        "/v1/domains/{domain}/verify",
        "/v1/domains/{domain}/rotate",
    }
    for path, ops in DOC["paths"].items():
        for method, operation in ops.items():
            headers = [(p["name"], p["in"]) for p in operation.get("parameters", []) if p["in"] == "header"]
            expected = (method.upper(), path) in idempotent
            assert headers == ([("Idempotency-Key", "header")] if expected else []), (method, path)
            for status, response in operation["responses"].items():
                documented = set(response.get("headers", {}))
                if status == "429":  # a quota's refusal says when to come back, whatever else it carries
                    assert "Retry-After" in documented, (method, path)
                    documented.discard("Retry-After")
                carries = expected and status not in {"401", "403"}
                assert documented == ({"Idempotency-Key", "Idempotent-Replayed"} if carries else set()), (
                    method,
                    path,
                    status,
                )


def _examples() -> Iterator[tuple[str, str, Any]]:
    """(where, schema $ref name, example value) for every example in the document."""
    for path, ops in DOC["paths"].items():
        for method, operation in ops.items():
            where = f"{method.upper()} {path}"
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, example in body.get("examples", {}).items():
                yield f"{where} request {name}", body["schema"]["$ref"], example["value"]
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    for name, example in media.get("examples", {}).items():
                        yield f"{where} {status} {name}", media["schema"]["$ref"], example["value"]


EXAMPLES = list(_examples())


def test_there_are_examples_for_every_request_body_and_response_with_content() -> None:
    for path, ops in DOC["paths"].items():
        for method, operation in ops.items():
            for media in operation.get("requestBody", {}).get("content", {}).values():
                assert media.get("examples"), f"{method} {path} request"
            for status, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    if "$ref" in media["schema"]:
                        assert media.get("examples"), f"{method} {path} {status}"


@pytest.mark.parametrize(("where", "ref", "value"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_every_example_validates_against_its_model(where: str, ref: str, value: Any) -> None:
    model = MODELS[ref.rsplit("/", 1)[-1]]
    if model is api_models.BatchSendRequest:  # its emails are validated one by one, as the route does
        for email in value["emails"][:1]:
            api_models.SendEmailRequest.model_validate(email)
        return
    model.model_validate(value)


def test_no_request_body_problems_on_operations_without_a_body() -> None:
    for path, ops in DOC["paths"].items():
        for method, operation in ops.items():
            if "requestBody" not in operation:
                assert not {"400", "413"} & set(operation["responses"]), f"{method} {path}"
            for status, response in operation["responses"].items():
                if status == "204":
                    assert not response.get("content"), f"{method} {path}: a 204 has no body"


def _template(method: str, path: str) -> str:
    """The document's path template that `path` matches for `method`."""
    for template, operations in DOC["paths"].items():
        rule = template.replace("{", "<").replace("}", ">")
        if method.lower() in operations and routes.Operation(method, rule, None, False).pattern.match(path):
            return str(template)
    raise AssertionError(f"{method} {path} matches no documented operation")


@pytest.fixture
def seeded(world: FakeWorld) -> Seeded:
    return world.seed()


def test_every_answer_is_documented(world: FakeWorld, seeded: Seeded) -> None:
    """Requests that reach each status of each operation: the status and its media type are in the
    document for that operation."""
    api = Api(world)
    tenant = seeded.tenant.tenant_id
    email = {"from": "jane@example.com", "to": "bob@example.org", "subject": "Hi", "text": "x"}
    sent = json.loads(api(event("POST", "/v1/emails", email, tenant_id=tenant))["body"])
    received = _ingested(world, tenant)
    raw = {"headers": {"Content-Type": "message/rfc822"}}
    raw_text = "From: bob@example.org\r\nMessage-ID: <r1@example.org>\r\n\r\nHi\r\n"
    requests: list[tuple[str, str, Any, dict[str, Any]]] = [
        ("POST", "/v1/emails", email, {}),
        ("POST", "/v1/emails", "{", {}),
        ("POST", "/v1/emails", {"to": "x"}, {}),
        ("POST", "/v1/emails", email, {"scopes": "read"}),
        ("POST", "/v1/emails", email, {"tenant_id": None}),
        ("POST", "/v1/emails", email, {"tenant_id": "tn_gone"}),
        ("POST", "/v1/emails", "x" * (4 * 1024 * 1024 + 1), {}),
        ("POST", "/v1/emails/batch", {"emails": [email]}, {}),
        ("POST", "/v1/emails/batch", {"emails": [{"to": "x"}]}, {}),
        ("POST", "/v1/attachments", {"filename": "a.pdf", "size": 3}, {}),
        ("POST", "/v1/attachments", {"filename": "a.pdf", "size": 10**10}, {}),
        ("GET", "/v1/emails", None, {"query": {"limit": "0"}}),
        ("GET", "/v1/emails", None, {}),
        ("GET", f"/v1/emails/{sent['id']}", None, {}),
        ("GET", "/v1/emails/em_nothing", None, {}),
        ("GET", f"/v1/messages/{sent['recipients'][0]['id']}", None, {}),
        ("GET", "/v1/messages/msg_nothing", None, {}),
        ("DELETE", f"/v1/emails/{sent['id']}", None, {}),
        ("DELETE", "/v1/emails/em_nothing", None, {}),
        ("POST", "/v1/suppressions", {"email": "a@example.org"}, {}),
        ("POST", "/v1/suppressions", {"email": "a@example.org"}, {}),
        ("GET", "/v1/suppressions", None, {}),
        ("GET", "/v1/suppressions/a@example.org", None, {}),
        ("GET", "/v1/suppressions/nobody", None, {}),
        ("DELETE", "/v1/suppressions/a@example.org", None, {}),
        ("DELETE", "/v1/suppressions/a@example.org", None, {}),
        ("GET", "/v1/openapi.json", None, {"tenant_id": None}),
        ("POST", "/v1/inbound/raw", raw_text, raw),
        ("POST", "/v1/inbound/raw", raw_text, {}),
        ("POST", "/v1/inbound/raw", "not a message", raw),
        ("POST", "/v1/inbound/raw", "x" * (4 * 1024 * 1024 + 1), raw),
        ("POST", "/v1/inbound/raw", raw_text, {**raw, "tenant_id": "tn_gone"}),
        ("POST", "/v1/inbound/raw", raw_text, {**raw, "scopes": "send"}),
        ("GET", "/v1/inbound", None, {}),
        ("GET", "/v1/inbound", None, {"query": {"kind": "bounce"}}),
        ("GET", f"/v1/inbound/{received}", None, {}),
        ("GET", "/v1/inbound/in_nothing", None, {}),
        # With an Idempotency-Key: the first answer, its replay, and a problem kept under a key.
        ("POST", "/v1/emails", email, {"headers": {"Idempotency-Key": "doc-1"}}),
        ("POST", "/v1/emails", email, {"headers": {"Idempotency-Key": "doc-1"}}),
        ("POST", "/v1/emails/batch", {"emails": [{"to": "x"}]}, {"headers": {"Idempotency-Key": "doc-2"}}),
        ("POST", "/v1/attachments", {"filename": "a.pdf", "size": 3}, {"headers": {"Idempotency-Key": "doc-3"}}),
        ("POST", "/v1/suppressions", {"email": "b@example.org"}, {"headers": {"Idempotency-Key": "doc-4"}}),
        ("POST", "/v1/suppressions", {"email": "b@example.org"}, {"headers": {"Idempotency-Key": "doc-4"}}),
        ("POST", "/v1/suppressions", {"email": "b@example.org"}, {"headers": {"Idempotency-Key": "doc-5"}}),
        ("POST", "/v1/inbound/raw", raw_text, {"headers": {**raw["headers"], "Idempotency-Key": "doc-6"}}),
        ("POST", "/v1/inbound/raw", raw_text, {"headers": {**raw["headers"], "Idempotency-Key": "doc-6"}}),
        ("POST", "/v1/inbound/raw", raw_text + "P.S.", {"headers": {**raw["headers"], "Idempotency-Key": "doc-6"}}),
    ]
    seen: set[tuple[str, str, int]] = set()
    headers_seen: set[str] = set()
    for method, path, body, options in requests:
        result = api(event(method, path, body, **{"tenant_id": tenant, **options}))
        template = _template(method, path)
        responses = DOC["paths"][template][method.lower()]["responses"]
        status = str(result["statusCode"])
        assert status in responses, f"{method} {path} answered an undocumented {status}: {result['body'][:200]}"
        documented = set(responses[status].get("content", {}))
        assert documented == ({result["headers"]["Content-Type"]} if result["body"] else set()), (method, path)
        for media in responses[status].get("content", {}).values():  # the body holds to its documented model
            if "$ref" in media["schema"]:
                MODELS[media["schema"]["$ref"].rsplit("/", 1)[-1]].model_validate_json(result["body"])
        answered = {"Idempotency-Key", "Idempotent-Replayed"} & set(result["headers"])
        assert answered <= set(responses[status].get("headers", {})), (method, path, status, answered)
        headers_seen |= answered
        seen.add((method, template, result["statusCode"]))
    assert len({s for *_, s in seen}) >= 10  # the requests reach successes and every kind of problem
    assert headers_seen == {"Idempotency-Key", "Idempotent-Replayed"}  # the header check above ran on both


def _ingested(world: FakeWorld, tenant_id: str) -> str:
    """An incoming message as the ingest worker stores it (a delivery report with an attachment); its id."""
    raw = b"Message-ID: <dsn-1@example.org>\r\n\r\nreport\r\n"
    found = inbound_id(tenant_id, "<dsn-1@example.org>", raw)
    key = resources.inbound_attachment_key(tenant_id, found, "att_1")
    world.blobs.put(key, b"details", "text/plain")
    record = InboundRecord(
        tenant_id=tenant_id,
        inbound_id=found,
        kind=InboundKind.DELIVERY_REPORT,
        received_at=world.clock.now(),
        source="push",
        raw_key=resources.inbound_raw_key(tenant_id, found),
        size=len(raw),
        digest=raw_digest(raw),
        report=InboundReport(action="failed", status="5.1.1"),
        attachments=(InboundAttachment(id="att_1", content_type="text/plain", size=7, key=key),),
    )
    world.inbound.create_inbound(record, InboundContent(text="report"), expires_at=0)
    return found


class _References(HTMLParser):
    """Every URL an HTML page makes a browser load or follow (`src`, `href`, ... of any element)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in {"src", "href", "action", "srcset", "data", "poster"} and v]


def _references(page: str) -> list[str]:
    parser = _References()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize(("stage_path", "base"), [(True, "/api"), (False, "")], ids=["stage", "custom-domain"])
def test_swagger_ui_loads_only_what_the_api_serves(world: FakeWorld, stage_path: bool, base: str) -> None:
    """The page works with no internet access: everything it loads is served by this API, without a
    key, with its content type; the style sheet's own images are inline; the online validator is off."""
    api = Api(world)

    def get(path: str) -> dict[str, Any]:
        request = event("GET", path, tenant_id=None)
        request["requestContext"]["path"] = f"{base}{path}" if stage_path else path
        return api(request)

    page = get(DOCS_PATH)
    assert page["statusCode"] == 200 and page["headers"]["Content-Type"] == "text/html"
    urls = _references(page["body"])
    assert sorted(urls) == [f"{base}/v1/docs.css", f"{base}/v1/docs.js"]
    assert "validatorUrl: null" in page["body"]
    expected = {"/v1/docs.css": ("text/css", ".swagger-ui"), "/v1/docs.js": ("text/javascript", "SwaggerUIBundle")}
    for url in urls:
        path = url.removeprefix(base)
        asset = get(path)
        content_type, marker = expected[path]
        assert asset["statusCode"] == 200, url
        assert asset["headers"]["Content-Type"] == f"{content_type}; charset=utf-8"
        assert asset["headers"]["Cache-Control"].startswith("public")
        assert marker in asset["body"]
        assert not re.search(r"sourceMappingURL", asset["body"])  # nothing more for a browser to fetch
        if content_type == "text/css":
            assert all(u.strip("'\"").startswith("data:") for u in re.findall(r"url\(([^)]*)\)", asset["body"]))
