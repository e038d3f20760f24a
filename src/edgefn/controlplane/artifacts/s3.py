"""Artifacts in an S3 bucket (AWS S3, MinIO); botocore errors stop here."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from edgefn.controlplane.errors import ArtifactStoreError, NotFound


def _missing(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound")


class S3ArtifactStore:
    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        create_bucket: bool = False,
    ) -> None:
        self.bucket = bucket
        # Path-style addressing and SigV4: what MinIO needs, and AWS accepts.
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        if create_bucket:
            self._ensure_bucket(region)

    def _ensure_bucket(self, region: str) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if not _missing(exc):
                raise ArtifactStoreError(f"cannot reach bucket {self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"cannot reach S3: {exc}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot create bucket {self.bucket}: {exc}") from exc

    def put(self, key: str, data: bytes) -> str:
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType="application/wasm"
            )
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot store {key} in S3: {exc}") from exc
        return f"s3://{self.bucket}/{key}"

    def get(self, key: str) -> bytes:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=key)
            return bytes(obj["Body"].read())
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(f"no artifact {key!r}") from exc
            raise ArtifactStoreError(f"cannot read {key} from S3: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"cannot read {key} from S3: {exc}") from exc

    def size(self, key: str) -> int | None:
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise ArtifactStoreError(f"cannot stat {key} in S3: {exc}") from exc
        except BotoCoreError as exc:
            raise ArtifactStoreError(f"cannot stat {key} in S3: {exc}") from exc
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot delete {key} in S3: {exc}") from exc

    def _presign(self, method: str, key: str, expires_in: int) -> str:
        try:
            url: str = self._client.generate_presigned_url(
                method, Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
            )
        except (BotoCoreError, ClientError) as exc:
            raise ArtifactStoreError(f"cannot presign {key}: {exc}") from exc
        return url

    def presign_get(self, key: str, expires_in: int) -> str:
        return self._presign("get_object", key, expires_in)

    def presign_put(self, key: str, expires_in: int) -> str:
        return self._presign("put_object", key, expires_in)
