"""REQUEST authorizer: `Authorization: Bearer <key>` to a tenant id, cached by API Gateway."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from petrel import container
from petrel.errors import Unauthorized
from petrel.observability import logger
from petrel.services.auth import authenticate


def _policy(effect: str, method_arn: str) -> dict[str, Any]:
    # Allow every route of this stage: the result is cached per key, not per route.
    api_arn = "/".join(method_arn.split("/")[:2]) + "/*"
    return {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": api_arn}],
    }


@logger().inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        key = authenticate(container.authorizer().tenants, headers.get("authorization"))
    except Unauthorized:
        logger().info("rejected API key")
        raise Exception("Unauthorized") from None  # API Gateway's signal for a 401
    logger().append_keys(tenant_id=key.tenant_id)
    return {
        "principalId": key.key_id,
        "policyDocument": _policy("Allow", str(event.get("methodArn", ""))),
        "context": {"tenant_id": key.tenant_id, "key_id": key.key_id, "scopes": " ".join(key.scopes)},
    }
