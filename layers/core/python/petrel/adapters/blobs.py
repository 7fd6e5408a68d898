"""S3: large message bodies, attachments uploaded through pre-signed URLs, large stored responses,
incoming mail and the links that let a client download its attachments."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from botocore.exceptions import ClientError

from petrel.ports import RecordNotFound

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def content_disposition(filename: str) -> str:
    """`attachment; filename="..."` that any client reads safely (RFC 6266): control characters are
    dropped (no header injection), quotes and backslashes escaped, and a name that is not plain ASCII
    gets an ASCII stand-in plus its exact form as `filename*=UTF-8''...` (RFC 8187), which clients
    that know it prefer."""
    name = "".join(ch for ch in filename if ch.isprintable())
    fallback = "".join(ch if " " <= ch <= "~" else "_" for ch in name)
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    value = f'attachment; filename="{quoted}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


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

    def presign_get(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A SigV4 GET link; with `filename`, S3 serves the object as an attachment of that name (the
        response-content-disposition override is part of the signed query)."""
        params: dict[str, str] = {"Bucket": self._bucket, "Key": key}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self._s3.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in, HttpMethod="GET")
