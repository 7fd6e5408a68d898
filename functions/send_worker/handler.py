"""Send worker: the deployed handler builds its container from the environment on the first call
(petrel.entrypoints.send_worker has the handler itself)."""

from petrel.container.worker import WorkerContainer
from petrel.entrypoints import on_first_call
from petrel.entrypoints.send_worker import create_worker

lambda_handler = on_first_call(lambda: create_worker(WorkerContainer.from_env()))
