"""The serving image's registry and the model bucket."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.clouds.aws import iam
from infra.config import DEFAULT_IMAGE_REPOSITORY

UNTAGGED_IMAGE_DAYS = 14
TAGGED_IMAGES_KEPT = 30
# A replaced model file (a new upload under the same name) is kept this long, then deleted.
NONCURRENT_MODEL_DAYS = 30


class Registry(pulumi.ComponentResource):
    """An ECR repository `<stack prefix>/servestack-serving`: scanned on push, immutable tags, encrypted."""

    repository: aws.ecr.Repository
    # `<account>.dkr.ecr.<region>.amazonaws.com/<prefix>`: the serving image is `<url>/servestack-serving:<tag>`.
    url: pulumi.Output[str]

    def __init__(self, name: str, prefix: str, force_delete: bool,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:aws:Registry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            f"{name}-serving",
            name=f"{prefix}/{DEFAULT_IMAGE_REPOSITORY}",
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")],
            force_delete=force_delete,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(f"{name}-serving-lifecycle", repository=self.repository.name,
                                policy=_lifecycle_policy(), opts=child)
        self.url = self.repository.repository_url.apply(_registry_prefix)
        self.register_outputs({"url": self.url})


def _lifecycle_policy() -> str:
    return json.dumps({"rules": [
        {"rulePriority": 1, "description": f"Expire untagged images after {UNTAGGED_IMAGE_DAYS} days",
         "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                       "countNumber": UNTAGGED_IMAGE_DAYS},
         "action": {"type": "expire"}},
        {"rulePriority": 2, "description": f"Keep the last {TAGGED_IMAGES_KEPT} tagged images",
         "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": TAGGED_IMAGES_KEPT},
         "action": {"type": "expire"}},
    ]})


def _registry_prefix(repository_url: str) -> str:
    return repository_url.removesuffix(f"/{DEFAULT_IMAGE_REPOSITORY}")


class ModelBucket(pulumi.ComponentResource):
    """Private, versioned, encrypted (SSE-S3), TLS only, owner-enforced."""

    bucket: aws.s3.Bucket
    uri: pulumi.Output[str]

    def __init__(self, name: str, force_destroy: bool, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("servestack:aws:ModelBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=force_destroy, opts=child)
        block = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access-block", bucket=self.bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership", bucket=self.bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"), opts=child)
        # SSE-S3 keeps the reader's role to the bucket alone (SSE-KMS would add kms:Decrypt on a key).
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=self.bucket.id,
            rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                apply_server_side_encryption_by_default=aws.s3.
                BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                    sse_algorithm="AES256"))],
            opts=child)
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning", bucket=self.bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child)
        # Versions keep a replaced multi-GB model for a while, not forever.
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=self.bucket.id,
            rules=[aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire-replaced-models", status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=NONCURRENT_MODEL_DAYS),
                abort_incomplete_multipart_upload=aws.s3.
                BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=7))],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]))
        # After the public access block: S3 refuses policies while it is being applied.
        aws.s3.BucketPolicy(f"{name}-tls-only", bucket=self.bucket.id,
                            policy=self.bucket.arn.apply(iam.tls_only_bucket_policy),
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]))
        self.uri = pulumi.Output.concat("s3://", self.bucket.bucket)
        self.register_outputs({"uri": self.uri})
