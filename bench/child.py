"""One measurement in a fresh interpreter, run by path by `bench.coldstart` (which reads this process's
CPU time from the operating system when it exits, interpreter start included).

Every figure, baselines too, is taken through this same script, so its own small cost is in all of them.

    child.py RESULT nothing                       the interpreter alone
    child.py RESULT import-module NAME            import one module (e.g. boto3, email_validator)
    child.py RESULT boto3-client                  import boto3 and build one client
    child.py RESULT boto3-call                    ... and make one DynamoDB call on AWS_ENDPOINT_URL
    child.py RESULT import HANDLER                import a deployed handler module (functions/<fn>/handler.py)
    child.py RESULT invoke HANDLER EVENT          ... and invoke its lambda_handler once with the JSON event
    child.py RESULT clients shared|separate       CPU of building four clients on one session / one each

RESULT is a file that receives a JSON document (the handler's answer, or a CPU figure).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

# The clients a function's container builds (the send worker's four).
CLIENT_SERVICES = ("dynamodb", "sqs", "s3", "secretsmanager")
REGION = "us-east-1"


class Context:
    """What a Lambda context offers the handlers (Powertools reads the attributes)."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:000000000000:function:{function_name}"
        self.log_group_name = self.log_stream_name = "bench"
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(path: str) -> Any:
    """The handler module, loaded by path as Lambda loads `handler.lambda_handler` from the asset."""
    spec = importlib.util.spec_from_file_location("handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_clients(shared: bool) -> float:
    """CPU seconds to build the four clients (boto3 imported before the clock starts)."""
    import boto3

    start = time.process_time()
    session = boto3.session.Session()
    for service in CLIENT_SERVICES:
        (session if shared else boto3.session.Session()).client(service, region_name=REGION)  # type: ignore[call-overload]
    return time.process_time() - start


def run(mode: str, args: list[str]) -> object:
    if mode == "nothing":
        return None
    if mode == "import-module":
        importlib.import_module(args[0])
        return None
    if mode in ("boto3-client", "boto3-call"):
        import boto3

        client = boto3.session.Session().client("dynamodb", region_name=REGION)
        return client.list_tables(Limit=1)["TableNames"] if mode == "boto3-call" else None
    if mode == "import":
        load_handler(args[0])
        return None
    if mode == "invoke":
        handler = load_handler(args[0]).lambda_handler
        event = json.loads(Path(args[1]).read_text())
        return handler(event, Context(Path(args[0]).parent.name))
    if mode == "clients":
        return build_clients(shared=args[0] == "shared")
    raise SystemExit(f"unknown mode {mode!r}")


def main() -> None:
    result, mode, *args = sys.argv[1:]
    Path(result).write_text(json.dumps(run(mode, args), default=str))


if __name__ == "__main__":
    main()
