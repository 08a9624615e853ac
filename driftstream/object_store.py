"""A small typed wrapper over the S3 API (SeaweedFS locally, MinIO in compose)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from driftstream.settings import Settings


def s3_client(settings: Settings, *, access_key: str | None = None, secret_key: str | None = None,
              timeout_s: float = 10.0, retries: int = 2):
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=access_key if access_key is not None else settings.s3_access_key,
        aws_secret_access_key=secret_key if secret_key is not None else settings.s3_secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": retries},
                      s3={"addressing_style": "path"}),
    )


class ObjectStore:
    """Put, get and list objects of the project's bucket."""

    def __init__(self, settings: Settings, bucket: str | None = None, client=None) -> None:
        self.settings = settings
        self.bucket = bucket or settings.s3_bucket
        self.client = client or s3_client(settings)

    def bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError:
            return False

    def ensure_bucket(self) -> None:
        if not self.bucket_exists():
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError:
            return False

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)
