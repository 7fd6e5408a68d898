"""IMAP poller: the deployed handler builds its container from the environment on the first call
(petrel.entrypoints.imap_poller has the handler itself)."""

from petrel.container.poller import PollerContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.imap_poller import create_poller

lambda_handler = on_first_call(lambda: create_poller(PollerContainer.from_env()))
