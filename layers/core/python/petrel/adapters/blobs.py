"""S3: large message bodies, attachments uploaded through pre-signed URLs, large stored responses."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from petrel.ports import RecordNotFound

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _NOT_FOUND


class S3BlobStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._s3 = client
        self._bucket = bucket

    def put(self, key: str, data: bytes, content_type: str = "message/rfc822") -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            return self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise RecordNotFound(f"no object {key}") from exc
            raise

    def size(self, key: str) -> int | None:
        try:
            head = self._s3.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return int(head["ContentLength"])

    def presign_put(self, key: str, *, content_type: str, size: int, expires_in: int) -> str:
        """Signed with SigV4 (the client is built with `signature_version="s3v4"`): the signature
        covers Content-Type and Content-Length, so S3 refuses an upload of another type or length."""
        return self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self._bucket, "Key": key, "ContentType": content_type, "ContentLength": size},
            ExpiresIn=expires_in,
            HttpMethod="PUT",
        )
