"""The public API: API Gateway REST proxy events to Petrel's routes (petrel.entrypoints.api)."""

from petrel.container.api import ApiContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.api import create_api

lambda_handler = on_first_call(lambda: create_api(ApiContainer.from_env()))
