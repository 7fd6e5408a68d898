"""The API stage's access log: the one line API Gateway writes per request, the requests its edge
refuses (throttled, unauthorized, blocked) included.

Kept apart from infra/constructs/api.py, which uses it, so that the cost model (bench.cost) can size
the line without loading CDK. Each field is one `$context` variable; API Gateway writes `-` for one
that has no value. No field repeats another: `requestId` alone identifies the request (the extended
id and the protocol were dropped as duplicates that only added bytes to every line).
"""

from __future__ import annotations

import json

from petrel import resources

ACCESS_LOG_FIELDS: dict[str, str] = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "responseLatency": "$context.responseLatency",
    "integrationLatency": "$context.integrationLatency",
    "tenantId": "$context.authorizer.tenant_id",
    "keyId": "$context.authorizer.principalId",
    "caller": "$context.identity.userArn",  # the IAM principal of an admin request
    "authorizerError": "$context.authorizer.error",
    "errorType": "$context.error.responseType",
    "errorMessage": "$context.error.message",
}


# Whether the API function writes an access line of its own (PETREL_API_ACCESS_LOG) where this log is
# written: no, the stage's line is the access log, and the function's lines name its `requestId`.
FUNCTION_ACCESS_LINE = False


def api_function_environment() -> dict[str, str]:
    """What the API function is told about its access line where the stage writes this log (deployed;
    infra/constructs/functions.py, and bench.cost's model of it)."""
    return {resources.API_ACCESS_LOG_ENV: str(FUNCTION_ACCESS_LINE).lower()}


def access_log_format() -> str:
    """The stage's access log format: a JSON object of the fields above."""
    return json.dumps(ACCESS_LOG_FIELDS)


def access_log_line(values: dict[str, str]) -> str:
    """The line API Gateway writes for a request whose `$context` variables have `values` (by variable
    name; `-` for the others), as its format renders it."""
    return json.dumps({field: values.get(variable, "-") for field, variable in ACCESS_LOG_FIELDS.items()})
