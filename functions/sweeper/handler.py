"""Sweeper: the deployed handler builds its container from the environment on the first call
(petrel.entrypoints.sweeper has the handler itself)."""

from petrel.container.sweeper import SweeperContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.sweeper import create_sweeper

lambda_handler = on_first_call(lambda: create_sweeper(SweeperContainer.from_env()))
