"""Ingest worker: the deployed handler builds its container from the environment on the first call
(petrel.entrypoints.ingest_worker has the handler itself)."""

from petrel.container.ingest import IngestContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.ingest_worker import create_ingest_worker

lambda_handler = on_first_call(lambda: create_ingest_worker(IngestContainer.from_env()))
