"""The REQUEST authorizer's handler: `Authorization: Bearer <key>` to a tenant, cached by API Gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from petrel.errors import Unauthorized
from petrel.services.auth import authenticate, usage_key

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.entrypoints import Handler
    from petrel.observability import Telemetry
    from petrel.ports import TenantStore


class AuthorizerPorts(Protocol):
    """What the authorizer is built on: an AuthorizerContainer, or the fakes in tests."""

    @property
    def tenants(self) -> TenantStore: ...
    @property
    def telemetry(self) -> Telemetry: ...
    @property
    def usage_key_prefix(self) -> str: ...


def policy(effect: str, method_arn: str) -> dict[str, Any]:
    """Allow every route of the stage: API Gateway caches the result per key, not per route."""
    api_arn = "/".join(method_arn.split("/")[:2]) + "/*"
    return {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": api_arn}],
    }


def create_authorizer(container: AuthorizerPorts) -> Handler:
    """The authorizer's Lambda handler, its tenant store from `container`. Its context names the
    tenant and the scopes the key is granted (`ApiKey.granted`: a key stored with the old `emails:*`
    names has every scope), which the API checks per operation (petrel.api.app).

    `usageIdentifierKey` is the tenant's usage key (petrel.services.auth.usage_key): API Gateway
    throttles the request by the usage plan that key is in (the API's key source is AUTHORIZER). It is
    computed, not looked up, so the authorizer reads nothing more; a tenant whose key was never enrolled
    (created before usage plans, not yet `petrel tenant enroll`ed) is refused by API Gateway with 403
    `Forbidden` after this returns, never by the authorizer."""
    logger = container.telemetry.logger

    @logger.inject_lambda_context(clear_state=True)
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
        try:
            key = authenticate(container.tenants, headers.get("authorization"))
        except Unauthorized:
            logger.info("rejected API key")
            raise Exception("Unauthorized") from None  # API Gateway's signal for a 401
        logger.info("authorized", extra={"tenant_id": key.tenant_id, "key_id": key.key_id})
        return {
            "principalId": key.key_id,
            "policyDocument": policy("Allow", str(event.get("methodArn", ""))),
            "usageIdentifierKey": usage_key(container.usage_key_prefix, key.tenant_id),
            "context": {"tenant_id": key.tenant_id, "key_id": key.key_id, "scopes": " ".join(key.granted)},
        }

    return lambda_handler
