"""The bucket for raw message bodies too large to keep inline, attachments uploaded before their email,
large stored responses and raw incoming mail with its attachments (one key prefix each,
`petrel.resources`), and the bucket for its access logs.

Every object expires by the lifecycle rule of its prefix (`BodiesBucket.retention_days`). The rules are
per prefix, not one rule on the whole bucket, because S3 applies the shortest of overlapping expirations:
a bucket-wide rule would cut incoming mail kept longer than bodies. Functions may write only under the
prefixes they are granted, and each of those has its rule (tests/infra checks that no prefix is missed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import acknowledge, removal_policy
from petrel import resources

# What a function may do under one key prefix: GetObject, PutObject, or both.
BodyAccess = Literal["read", "write", "read_write"]
BODY_ACTIONS: dict[str, tuple[str, ...]] = {
    "read": ("s3:GetObject",),
    "write": ("s3:PutObject",),
    "read_write": ("s3:GetObject", "s3:PutObject"),
}

# Lifecycle rule id of each prefix (the first two as first deployed).
_RULE_IDS: dict[str, str] = {
    resources.BODIES_PREFIX: "bodies",
    resources.ATTACHMENTS_PREFIX: "attachments",
    resources.IDEMPOTENCY_PREFIX: "idempotency",
    resources.INBOUND_PREFIX: "inbound",
}


def retention_days(config: EnvironmentConfig) -> dict[str, int]:
    """Days an object is kept, by key prefix: bodies and stored responses as long as messages may live,
    uploads a day (their content is copied into each email's body), incoming mail as configured."""
    return {
        resources.BODIES_PREFIX: config.body_retention_days,
        resources.ATTACHMENTS_PREFIX: resources.ATTACHMENT_RETENTION_DAYS,
        resources.IDEMPOTENCY_PREFIX: config.body_retention_days,
        resources.INBOUND_PREFIX: config.inbound_retention_days,
    }


class BodiesBucket(Construct):
    """Private, S3-managed encryption, TLS only; objects expire by their prefix (`retention_days`)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: EnvironmentConfig) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,  # the only encryption S3 log delivery supports
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(config.log_retention_days))],
            removal_policy=removal_policy(config),
        )
        acknowledge(
            self.access_logs,
            "AwsSolutions-S1",
            "This bucket receives the bodies bucket's server access logs; logging it in turn would "
            "need yet another bucket (or a loop into itself) and add nothing: it is written only by "
            "the S3 logging service.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=False,
            lifecycle_rules=[
                *(
                    s3.LifecycleRule(id=_RULE_IDS[prefix], prefix=prefix, expiration=Duration.days(days))
                    for prefix, days in retention_days(config).items()
                ),
                s3.LifecycleRule(id="incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="bodies/",
            removal_policy=removal_policy(config),
        )

    def grant(self, grantee: iam.IGrantable, prefixes: Mapping[str, BodyAccess]) -> None:
        """`s3:GetObject` and/or `s3:PutObject` on the objects under each prefix, as `prefixes` says,
        nothing more. A function that checks uploads (attachments) may also list the bucket: without
        s3:ListBucket, S3 answers a missing object with 403 instead of 404, and "not uploaded yet" could
        not be told from a refused read."""
        unknown = sorted(set(prefixes) - set(_RULE_IDS))
        if unknown:
            raise ValueError(f"no lifecycle rule expires objects under {unknown}")
        for access in sorted(set(prefixes.values())):
            iam.Grant.add_to_principal(
                grantee=grantee,
                actions=list(BODY_ACTIONS[access]),
                resource_arns=[
                    self.bucket.arn_for_objects(f"{prefix}*") for prefix, given in prefixes.items() if given == access
                ],
            )
        if resources.ATTACHMENTS_PREFIX in prefixes:
            iam.Grant.add_to_principal(
                grantee=grantee, actions=["s3:ListBucket"], resource_arns=[self.bucket.bucket_arn]
            )
