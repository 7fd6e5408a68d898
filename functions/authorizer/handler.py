"""REQUEST authorizer: `Authorization: Bearer <key>` to a tenant id (petrel.entrypoints.authorizer)."""

from petrel.container.authorizer import AuthorizerContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.authorizer import create_authorizer

lambda_handler = on_first_call(lambda: create_authorizer(AuthorizerContainer.from_env()))
