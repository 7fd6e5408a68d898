"""The API function's handler: API Gateway REST proxy events through Petrel's routes
(petrel.api.app on Powertools' resolver), every dependency from the container passed in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from petrel.api.app import ApiApplication

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.api.deps import ApiPorts
    from petrel.entrypoints import Handler


def create_api(container: ApiPorts) -> Handler:
    """The API's Lambda handler. `container` is an `ApiContainer`, or anything with the same ports
    (the tests pass the in-memory fakes)."""
    application = ApiApplication(container)

    @container.telemetry.with_context
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return application(event, context)

    return lambda_handler
