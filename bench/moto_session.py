"""What the benches that run a function's handler under moto's in-process mock share."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from boto3.session import Session

REGION = "us-east-1"


def moto_session() -> Session:
    """A boto3 session for `moto.mock_aws()`, with Powertools quiet (errors only, no metrics) so that
    logging is not what is measured. Call it before entering the mock."""
    import boto3

    from petrel import resources as r

    os.environ.update(
        {
            r.POWERTOOLS_LOG_LEVEL_ENV: "ERROR",
            r.POWERTOOLS_METRICS_NAMESPACE_ENV: r.METRICS_NAMESPACE,
            r.POWERTOOLS_SERVICE_NAME_ENV: "bench",
            r.POWERTOOLS_METRICS_DISABLED_ENV: "true",
        }
    )
    os.environ.pop("AWS_ENDPOINT_URL", None)  # moto intercepts the calls of clients on AWS's own endpoints
    return boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench", region_name=REGION)
