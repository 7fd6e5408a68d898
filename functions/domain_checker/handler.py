"""Domain checker: the deployed handler builds its container from the environment on the first call
(petrel.entrypoints.domain_checker has the handler itself)."""

from petrel.container.domains import DomainCheckContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.domain_checker import create_domain_checker

lambda_handler = on_first_call(lambda: create_domain_checker(DomainCheckContainer.from_env()))
