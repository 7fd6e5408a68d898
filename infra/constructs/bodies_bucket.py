"""The bucket for raw message bodies too large to keep inline, attachments uploaded before their email
and large stored responses (one key prefix each, `petrel.resources`), and the bucket for its access logs."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import EnvironmentConfig
from infra.constructs.common import acknowledge, removal_policy
from petrel import resources


class BodiesBucket(Construct):
    """Private, S3-managed encryption, TLS only, objects expire after `body_retention_days`; uploaded
    attachments after `ATTACHMENT_RETENTION_DAYS` (their content is copied into each email's body)."""

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
                s3.LifecycleRule(
                    id="bodies",
                    expiration=Duration.days(config.body_retention_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="attachments",
                    prefix=resources.ATTACHMENTS_PREFIX,
                    expiration=Duration.days(resources.ATTACHMENT_RETENTION_DAYS),
                ),
            ],
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="bodies/",
            removal_policy=removal_policy(config),
        )

    def grant(self, grantee: iam.IGrantable, *, prefixes: Sequence[str], write: bool) -> None:
        """`s3:GetObject` (and `s3:PutObject` when `write`) on the objects under `prefixes` only. A
        function that checks uploads (attachments) may also list the bucket: without s3:ListBucket,
        S3 answers a missing object with 403 instead of 404, and "not uploaded yet" could not be told
        from a refused read."""
        actions = ["s3:GetObject", "s3:PutObject"] if write else ["s3:GetObject"]
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=actions,
            resource_arns=[self.bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes],
        )
        if resources.ATTACHMENTS_PREFIX in prefixes:
            iam.Grant.add_to_principal(
                grantee=grantee, actions=["s3:ListBucket"], resource_arns=[self.bucket.bucket_arn]
            )
