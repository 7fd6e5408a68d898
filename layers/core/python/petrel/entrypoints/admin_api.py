"""The admin API function's handler: API Gateway REST proxy events (IAM-authorized) through the
`/v1/admin` routes (petrel.api.admin), every dependency from the container passed in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from petrel.api.admin import AdminApiApplication

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from petrel.api.admin import AdminApiPorts
    from petrel.entrypoints import Handler


def create_admin_api(container: AdminApiPorts) -> Handler:
    """The admin API's Lambda handler. `container` is an `AdminApiContainer`, or anything with the same
    ports (the unit tests pass the in-memory fakes)."""
    application = AdminApiApplication(container)

    @container.telemetry.with_context
    def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return application(event, context)

    return lambda_handler
