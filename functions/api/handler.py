"""The public API: API Gateway REST proxy events to Petrel's routes."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from petrel.api.routes import dispatch
from petrel.observability import logger


@logger().inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    logger().append_keys(tenant_id=authorizer.get("tenant_id"))
    return dispatch(event)
