"""The one price table of the cost model (bench.cost): AWS list prices, us-east-1, as of 2026.

Each entry names the item of the AWS pricing page it comes from. Prices are in US dollars per the
unit its name says; bench.cost turns the units it measures per email into dollars per million emails
with these and nothing else, so a price change is made here alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """A list price: `dollars` per `per` units of `unit`; `source` is the pricing page and its item."""

    dollars: float
    per: float
    unit: str
    source: str

    @property
    def per_unit(self) -> float:
        return self.dollars / self.per


# aws.amazon.com/api-gateway/pricing: REST APIs, API calls, first 333 million per month.
API_GATEWAY_REST = Price(3.50, 1_000_000, "request", "API Gateway pricing: REST APIs, API calls (first 333M)")
# aws.amazon.com/lambda/pricing: Requests.
LAMBDA_REQUESTS = Price(0.20, 1_000_000, "request", "Lambda pricing: Requests")
# aws.amazon.com/lambda/pricing: Duration, x86, first 6 billion GB-seconds per month.
LAMBDA_GB_SECOND_X86 = Price(0.0000166667, 1, "GB-second", "Lambda pricing: Duration x86 (first 6B GB-s)")
# aws.amazon.com/lambda/pricing: Duration, Arm, first 7.5 billion GB-seconds per month.
LAMBDA_GB_SECOND_ARM64 = Price(0.0000133334, 1, "GB-second", "Lambda pricing: Duration Arm (first 7.5B GB-s)")
# aws.amazon.com/dynamodb/pricing/on-demand: Write request units.
DYNAMODB_WRITE = Price(0.625, 1_000_000, "write request unit", "DynamoDB on-demand pricing: write request units")
# aws.amazon.com/dynamodb/pricing/on-demand: Read request units.
DYNAMODB_READ = Price(0.125, 1_000_000, "read request unit", "DynamoDB on-demand pricing: read request units")
# aws.amazon.com/sqs/pricing: Standard queue, first 100 billion requests per month (each 64 KB chunk
# of a payload is billed as one request).
SQS_STANDARD = Price(0.40, 1_000_000, "request", "SQS pricing: Standard queue requests (per 64 KB chunk)")
# aws.amazon.com/eventbridge/pricing: Scheduler, invocations (after the free tier).
SCHEDULER_INVOCATIONS = Price(1.00, 1_000_000, "invocation", "EventBridge pricing: Scheduler invocations")
# aws.amazon.com/s3/pricing: S3 Standard, PUT, COPY, POST, LIST requests.
S3_PUT = Price(0.005, 1_000, "request", "S3 pricing: S3 Standard PUT, COPY, POST, LIST requests")
# aws.amazon.com/s3/pricing: S3 Standard, GET, SELECT and all other requests.
S3_GET = Price(0.0004, 1_000, "request", "S3 pricing: S3 Standard GET, SELECT and all other requests")
# aws.amazon.com/secrets-manager/pricing: API calls.
SECRETS_MANAGER_CALLS = Price(0.05, 10_000, "API call", "Secrets Manager pricing: per 10,000 API calls")
# aws.amazon.com/cloudwatch/pricing: Logs, Collect (data ingestion), Standard log class.
LOGS_INGESTION = Price(0.50, 1024**3, "byte", "CloudWatch pricing: Logs, Collect (Data Ingestion), Standard")
# aws.amazon.com/ses/pricing: outbound email, $0.10 per 1,000 emails: the comparison, not a cost of Petrel.
SES_OUTBOUND = Price(0.10, 1_000, "email", "SES pricing: outbound email sent from EC2/Lambda, per 1,000")
