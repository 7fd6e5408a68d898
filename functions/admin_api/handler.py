"""Admin API: the deployed handler builds its container from the environment on the first call
(petrel.entrypoints.admin_api has the handler itself)."""

from petrel.container.admin_api import AdminApiContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.admin_api import create_admin_api

lambda_handler = on_first_call(lambda: create_admin_api(AdminApiContainer.from_env()))
