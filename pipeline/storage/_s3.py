"""S3 backend of `pipeline.storage` (``s3://bucket/key``): one lazy boto3 client, retries, verified
uploads, ranged reads.

Retries happen at two levels:

* botocore retries every request (connection errors, timeouts, 5xx, throttling) with exponential
  backoff and full jitter, ``storage.s3.max_attempts`` attempts in ``retry_mode`` (standard or
  adaptive); each failed attempt is logged here through the ``needs-retry`` event;
* this module adds retries where botocore has none: a response body cut off while it streams, and
  ``409 ConditionalRequestConflict`` of a conditional PUT.

When the attempts are spent, the error becomes a `StorageError` naming the URI and the endpoint.
Messages and log records never include credentials (secret values from the environment and
user-info in the endpoint URL are masked defensively as well).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from s3transfer.exceptions import RetriesExceededError
from s3transfer.utils import ChunksizeAdjuster

from . import _uri
from ._atomic import write_atomically
from ._backend import Lazy, MiB, PutResult, Source, open_ranged, seekable_source
from ._errors import AccessDenied, CredentialsError, NotFound, StorageError

if TYPE_CHECKING:
    from pipeline.config import S3Config, StorageConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BACKOFF_MAX_S = 20.0
_TRANSFER_THREADS = 8
_HASH_CHUNK = MiB
_SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "SlowDown",
        "RequestTimeout",
    }
)
_AUTH_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AllAccessDisabled",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# what to do when the store does not accept the credentials themselves, by error code
_CREDENTIAL_FIXES = {
    "InvalidAccessKeyId": (
        "the access key ID is not one this store knows: check AWS_ACCESS_KEY_ID, or the profile "
        "in AWS_PROFILE / storage.s3.profile, belongs to this store (storage.s3.endpoint_url)"
    ),
    "SignatureDoesNotMatch": (
        "the secret key does not match the access key ID: check AWS_SECRET_ACCESS_KEY (or the "
        "profile's aws_secret_access_key in ~/.aws/credentials)"
    ),
    "ExpiredToken": (
        "the credentials have expired: refresh them (e.g. `aws sso login --profile <name>`, or "
        "new AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) and run again"
    ),
}
_CREDENTIAL_FIXES["TokenRefreshRequired"] = _CREDENTIAL_FIXES["ExpiredToken"]
_CREDENTIAL_FIXES["InvalidToken"] = (
    "the session token is not valid for these keys: set AWS_SESSION_TOKEN to the token issued "
    "with them (or unset it for long-term keys)"
)
NO_CREDENTIALS_FIX = (
    "give the job AWS credentials: AWS_PROFILE=<name> or storage.s3.profile=<name> (a profile "
    "of ~/.aws/config), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN "
    "for temporary ones) in the environment, or run where an instance or pod role applies; "
    "never in a config file"
)
# the IAM action each storage action needs (HEAD needs s3:GetObject too)
_IAM_ACTIONS = {
    "read the metadata of": "s3:GetObject",
    "read": "s3:GetObject",
    "download": "s3:GetObject",
    "list": "s3:ListBucket",
    "delete": "s3:DeleteObject",
    "write": "s3:PutObject",
    "upload": "s3:PutObject",
    "create": "s3:PutObject",
}
_STREAM_ERRORS = (
    ResponseStreamingError,
    IncompleteReadError,
    ReadTimeoutError,
    ConnectionClosedError,
)


class _InterruptedBody(Exception):
    """A response body that broke off while streaming (retried here; botocore does not)."""

    def __init__(self, cause: BotoCoreError) -> None:
        super().__init__(str(cause))
        self.cause = cause


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _redact(text: str) -> str:
    """Mask any secret credential value from the environment that might appear in ``text``."""
    for name in _SECRET_ENV_VARS:
        value = os.environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def _error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _http_status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is_precondition_failed(err: Exception) -> bool:
    return isinstance(err, ClientError) and (
        _http_status(err) == 412 or _error_code(err) == "PreconditionFailed"
    )


def _is_conditional_conflict(err: Exception) -> bool:
    return isinstance(err, ClientError) and (
        _error_code(err) == "ConditionalRequestConflict"
        or (_http_status(err) == 409 and _error_code(err) in ("", "OperationAborted"))
    )


def _is_interrupted_body(err: Exception) -> bool:
    return isinstance(err, _InterruptedBody)


def _read_body(response: dict[str, Any], expected_bytes: int | None = None) -> bytes:
    """Read and close a GetObject body; a cut-off stream becomes `_InterruptedBody`."""
    body = response["Body"]
    try:
        data = body.read()
    except _STREAM_ERRORS as err:
        raise _InterruptedBody(err) from err
    finally:
        body.close()
    if expected_bytes is not None and len(data) != expected_bytes:
        raise _InterruptedBody(
            IncompleteReadError(actual_bytes=len(data), expected_bytes=expected_bytes)
        )
    return data


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class _Checksums:
    """Local digests of an upload, laid out the way S3 computes them for ``parts`` parts."""

    size: int
    parts: int
    sha256: bytes  # of the whole content
    md5: bytes  # of the whole content
    part_sha256: tuple[bytes, ...]
    part_md5: tuple[bytes, ...]

    def expected_sha256(self) -> str:
        """The ChecksumSHA256 S3 reports: full-object for one part, composite for multipart."""
        if self.parts == 1:
            return _b64(self.sha256)
        return _b64(hashlib.sha256(b"".join(self.part_sha256)).digest())

    def expected_etag(self) -> str:
        """The ETag S3 reports for an unencrypted object: MD5, or MD5 of part MD5s + ``-N``."""
        if self.parts == 1:
            return self.md5.hex()
        return f"{hashlib.md5(b''.join(self.part_md5), usedforsecurity=False).hexdigest()}-{self.parts}"


def _checksums(handle: BinaryIO, part_bytes: int) -> _Checksums:
    """Hash ``handle`` from its current position in parts of ``part_bytes`` (one pass)."""
    whole_sha, whole_md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    part_sha: list[bytes] = []
    part_md5: list[bytes] = []
    size = 0
    while True:
        sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        got = 0
        while got < part_bytes:
            chunk = handle.read(min(_HASH_CHUNK, part_bytes - got))
            if not chunk:
                break
            for digest in (sha, md5, whole_sha, whole_md5):
                digest.update(chunk)
            got += len(chunk)
        if got == 0 and part_sha:
            break
        part_sha.append(sha.digest())
        part_md5.append(md5.digest())
        size += got
        if got < part_bytes:
            break
    return _Checksums(
        size,
        len(part_sha),
        whole_sha.digest(),
        whole_md5.digest(),
        tuple(part_sha),
        tuple(part_md5),
    )


def create(cfg: StorageConfig, options: dict[str, Any]) -> S3Backend:
    """The backend `Storage` uses for ``s3://`` URIs, configured by ``storage.s3``."""
    return S3Backend(cfg.s3, **options)


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


class S3Backend:
    """`pipeline.storage.Storage` operations on ``s3://`` URIs (see the module docstring)."""

    def __init__(
        self,
        cfg: S3Config,
        *,
        retry_mode: str,
        checksum: str,
        read_block_bytes: int,
        backoff_base_s: float,
    ) -> None:
        self._cfg = cfg
        self._retry_mode = retry_mode
        self._checksum = checksum
        self._read_block_bytes = read_block_bytes
        self._backoff_base_s = backoff_base_s
        self._client: Lazy[Any] = Lazy(self._create_client)

    # -- client --------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created once on first use."""
        return self._client()

    def _create_client(self) -> Any:
        cfg = self._cfg
        try:
            session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
        except ProfileNotFound as err:
            raise StorageError(
                f"AWS profile {cfg.profile!r} (storage.s3.profile) was not found; check "
                "~/.aws/config (or AWS_CONFIG_FILE) or leave the profile unset"
            ) from err
        config = Config(
            connect_timeout=cfg.connect_timeout_s,
            read_timeout=cfg.read_timeout_s,
            retries={"mode": self._retry_mode, "total_max_attempts": cfg.max_attempts},
            request_checksum_calculation=cfg.request_checksum_calculation,
            response_checksum_validation=cfg.response_checksum_validation,
            max_pool_connections=2 * _TRANSFER_THREADS,
        )
        try:
            client = session.client("s3", endpoint_url=cfg.endpoint_url, config=config)
        except ValueError as err:
            raise StorageError(
                f"storage.s3.endpoint_url={_uri.redact_url(cfg.endpoint_url or '')!r} is not a usable "
                "URL; expected e.g. http://127.0.0.1:9000"
            ) from err
        client.meta.events.register("needs-retry.s3", self._log_failed_attempt)
        logger.debug("created S3 client for %s", self._endpoint_text(client))
        return client

    def _endpoint_text(self, client: Any = None) -> str:
        client = client if client is not None else self._client.made
        url = client.meta.endpoint_url if client is not None else self._cfg.endpoint_url
        return _uri.redact_url(url) if url else "the default AWS S3 endpoint"

    def _transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self._cfg.multipart_threshold_mb * MiB,
            multipart_chunksize=self._cfg.multipart_chunksize_mb * MiB,
            max_concurrency=_TRANSFER_THREADS,
            use_threads=True,
            preferred_transfer_client="classic",
        )

    # -- retries and errors --------------------------------------------------------------------

    def _log_failed_attempt(
        self,
        attempts: int,
        response: Any = None,
        caught_exception: Exception | None = None,
        operation: Any = None,
        request_dict: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        """botocore ``needs-retry`` hook: log transient failures (botocore decides and sleeps)."""
        reason = self._transient_reason(response, caught_exception)
        if reason is None:
            return None
        url = (
            _uri.redact_url(request_dict["url"]) if request_dict and "url" in request_dict else "?"
        )
        logger.info(
            "S3 %s %s failed on attempt %d/%d (%s)",
            getattr(operation, "name", "request"),
            url,
            attempts,
            self._cfg.max_attempts,
            reason,
            extra={"s3_attempt": attempts, "s3_max_attempts": self._cfg.max_attempts},
        )
        return None

    def _transient_reason(self, response: Any, caught_exception: Exception | None) -> str | None:
        """Why an attempt failed transiently, or None if it did not (or not transiently)."""
        if caught_exception is not None:
            if isinstance(caught_exception, (BotoConnectionError, HTTPClientError)):
                return self._connection_reason(caught_exception)
            return None
        if not response:
            return None
        http_response, parsed = response
        status = int(getattr(http_response, "status_code", 0) or 0)
        code = str((parsed or {}).get("Error", {}).get("Code", ""))
        if status >= 500 or status == 429 or code in _THROTTLING_CODES:
            return f"HTTP {status} {code}".strip()
        return None

    def _connection_reason(self, err: BaseException) -> str:
        """A short, secret-free reason for a connection-level failure."""
        if isinstance(err, ConnectTimeoutError):
            return f"no connection within {self._cfg.connect_timeout_s:g} s"
        if isinstance(err, ReadTimeoutError):
            return f"no response within {self._cfg.read_timeout_s:g} s"
        if isinstance(err, ConnectionClosedError):
            return "connection closed by the server"
        text = " ".join(str(item) for item in _error_chain(err)).lower()
        if "refused" in text:
            return "connection refused"
        if "name or service not known" in text or "name resolution" in text or "nodename" in text:
            return "host name not found"
        if "ssl" in text or "certificate" in text:
            return "TLS/SSL error"
        return "connection failed"

    def _retry(
        self, call: Callable[[], T], *, is_retryable: Callable[[Exception], bool], what: str
    ) -> T:
        """Run ``call``; on a retryable error, back off (exponential, full jitter) and try again."""
        attempts = self._cfg.max_attempts
        for attempt in range(1, attempts):
            try:
                return call()
            except (ClientError, BotoCoreError, _InterruptedBody) as err:
                if not is_retryable(err):
                    raise
                delay = random.uniform(
                    0.0, min(_BACKOFF_MAX_S, self._backoff_base_s * 2 ** (attempt - 1))
                )
                logger.info(
                    "%s failed on attempt %d/%d (%s); retrying in %.2f s",
                    what,
                    attempt,
                    attempts,
                    _redact(self._short_reason(err)),
                    delay,
                )
                time.sleep(delay)
        return call()

    def _short_reason(self, err: Exception) -> str:
        if isinstance(err, ClientError):
            return f"HTTP {_http_status(err)} {_error_code(err)}".strip()
        if isinstance(err, _InterruptedBody):
            return f"response body interrupted: {type(err.cause).__name__}"
        return self._connection_reason(err)

    @contextlib.contextmanager
    def _errors(self, action: str, uri: str) -> Iterator[None]:
        """Turn botocore/s3transfer errors raised inside into `StorageError` for ``uri``."""
        try:
            yield
        except (ClientError, BotoCoreError, RetriesExceededError, _InterruptedBody) as err:
            raise self._to_storage_error(err, action, uri) from err

    def _to_storage_error(self, err: Exception, action: str, uri: str) -> StorageError:
        endpoint = self._endpoint_text()
        if isinstance(err, RetriesExceededError) and err.last_exception is not None:
            err = err.last_exception
        if isinstance(err, _InterruptedBody):
            err = err.cause
        if isinstance(err, ClientError):
            return self._client_error(err, action, uri, endpoint)
        if isinstance(err, (NoCredentialsError, PartialCredentialsError)):
            what = "no" if isinstance(err, NoCredentialsError) else "incomplete"
            return CredentialsError(
                f"{what} AWS credentials found to {action} {uri}", uri=uri, fix=NO_CREDENTIALS_FIX
            )
        if isinstance(err, (BotoConnectionError, HTTPClientError, IncompleteReadError)):
            return StorageError(
                _redact(
                    f"could not reach S3 endpoint {endpoint} after {self._cfg.max_attempts} "
                    f"attempts ({self._connection_reason(err)}) to {action} {uri}"
                ),
                uri=uri,
                fix="check storage.s3.endpoint_url and that the store is up",
            )
        else:
            message = f"could not {action} {uri} at {endpoint}: {type(err).__name__}"
        return StorageError(_redact(message), uri=uri)

    def _client_error(self, err: ClientError, action: str, uri: str, endpoint: str) -> StorageError:
        code, status = _error_code(err), _http_status(err)
        what = f"HTTP {status} {code}".strip()
        if code == "NoSuchBucket":
            return NotFound(
                f"the bucket of {uri} does not exist at {endpoint} ({what})",
                uri=uri,
                fix="check the bucket name in the URI and storage.s3.endpoint_url",
            )
        if status == 404 or code in _NOT_FOUND_CODES:
            return NotFound(
                f"{uri} not found ({what})",
                uri=uri,
                fix="check the path: bucket and key (keys are case-sensitive)",
            )
        if code in _CREDENTIAL_FIXES:
            return CredentialsError(
                _redact(f"{endpoint} did not accept the credentials to {action} {uri} ({what})"),
                uri=uri,
                fix=_CREDENTIAL_FIXES[code],
            )
        if status == 403 or code in _AUTH_CODES:
            return AccessDenied(
                _redact(f"{endpoint} denied access to {action} {uri} ({what})"),
                uri=uri,
                fix=_permission_fix(action, uri),
            )
        if status >= 500 or status == 429 or code in _THROTTLING_CODES:
            message = (
                f"S3 endpoint {endpoint} kept failing to {action} {uri} after "
                f"{self._cfg.max_attempts} attempts ({what}); the store is overloaded or down, "
                "try again later"
            )
        else:
            detail = str(err.response.get("Error", {}).get("Message", ""))[:200]
            message = (
                f"S3 refused to {action} {uri} at {endpoint} ({what}{': ' + detail if detail else ''}); "
                "if the store is not AWS S3, try storage.s3.request_checksum_calculation="
                "when_required and Storage(checksum='md5')"
            )
        return StorageError(_redact(message), uri=uri)

    # -- reading -------------------------------------------------------------------------------

    def _head(self, uri: str, *, checksum: bool = False) -> dict[str, Any]:
        bucket, key = _uri.parse_s3(uri)
        extra = {"ChecksumMode": "ENABLED"} if checksum else {}
        with self._errors("read the metadata of", uri):
            try:
                return self.client.head_object(Bucket=bucket, Key=key, **extra)
            except ClientError as err:
                raise self._why_forbidden(err, bucket, key) from err

    def _why_forbidden(self, err: ClientError, bucket: str, key: str) -> ClientError:
        """A HEAD's 403 has no body, so it cannot say whether the credentials were refused or
        only this action: a one-byte GET's error says which. `err` itself otherwise."""
        if _http_status(err) != 403 or _error_code(err) not in ("403", "Forbidden", ""):
            return err
        try:
            self.client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")
        except ClientError as explained:
            if _error_code(explained) not in ("403", "Forbidden", ""):
                return explained
        except BotoCoreError:
            pass
        return err

    def exists(self, uri: str) -> bool:
        try:
            self._head(uri)
        except NotFound:
            return False
        return True

    def size(self, uri: str) -> int:
        return int(self._head(uri)["ContentLength"])

    def fingerprint(self, uri: str) -> str:
        head = self._head(uri)
        return f"s3:{int(head['ContentLength'])}:{head.get('ETag', '').strip(chr(34))}"

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = _uri.parse_s3(uri)

        def fetch() -> bytes:
            return _read_body(self.client.get_object(Bucket=bucket, Key=key))

        with self._errors("read", uri):
            return self._retry(fetch, is_retryable=_is_interrupted_body, what=f"GET {uri}")

    def read_range(self, uri: str, start: int, length: int, etag: str | None) -> bytes:
        """``length`` bytes of ``uri`` from ``start`` in one ranged GET (pinned to ``etag``)."""
        bucket, key = _uri.parse_s3(uri)
        extra = {"IfMatch": etag} if etag else {}

        def fetch() -> bytes:
            response = self.client.get_object(
                Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}", **extra
            )
            return _read_body(response, expected_bytes=length)

        with self._errors("read", uri):
            try:
                return self._retry(
                    fetch, is_retryable=_is_interrupted_body, what=f"GET {uri} (range)"
                )
            except ClientError as err:
                if _is_precondition_failed(err):
                    raise StorageError(
                        f"{uri} was replaced while it was being read (its ETag is no longer "
                        f"{etag}); read it again",
                        uri=uri,
                    ) from err
                raise

    def open(self, uri: str) -> io.BufferedReader:
        head = self._head(uri)
        return open_ranged(
            self,
            uri,
            size=int(head["ContentLength"]),
            etag=head.get("ETag"),
            block_bytes=self._read_block_bytes,
        )

    def list(self, prefix_uri: str) -> list[tuple[str, int]]:
        bucket, key = _uri.parse_s3(prefix_uri, need_key=False)
        prefix = _uri.listing_prefix(key)
        found: list[tuple[str, int]] = []
        with self._errors("list", prefix_uri):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append((_uri.make("s3", bucket, item["Key"]), int(item["Size"])))
        return sorted(found)

    def download(self, uri: str, local_path: str) -> None:
        bucket, key = _uri.parse_s3(uri)
        config = self._transfer_config()
        with self._errors("download", uri):
            write_atomically(
                local_path,
                lambda handle: self.client.download_fileobj(bucket, key, handle, Config=config),
            )

    # -- writing -------------------------------------------------------------------------------

    def delete(self, uri: str) -> None:
        bucket, key = _uri.parse_s3(uri)
        with self._errors("delete", uri):
            self.client.delete_object(Bucket=bucket, Key=key)

    def _checksum_args(self, checksums: _Checksums) -> dict[str, str]:
        """Parameters that make the store compute (and, for MD5, check) a checksum of a PUT."""
        if self._checksum == "sha256":
            return {"ChecksumAlgorithm": "SHA256"}
        return {"ContentMD5": _b64(checksums.md5)}

    def _checksum_mode(self) -> dict[str, str]:
        """HeadObject parameters that return the stored SHA-256 (not sent in MD5 mode)."""
        return {"ChecksumMode": "ENABLED"} if self._checksum == "sha256" else {}

    def put(self, source: Source, uri: str) -> PutResult:
        bucket, key = _uri.parse_s3(uri)
        threshold = self._cfg.multipart_threshold_mb * MiB
        if isinstance(source, (bytes, bytearray, memoryview)) and len(source) < threshold:
            data = bytes(source)
            checksums = _checksums(io.BytesIO(data), max(len(data), 1))
            with self._errors("write", uri):
                response = self.client.put_object(
                    Bucket=bucket, Key=key, Body=data, **self._checksum_args(checksums)
                )
            self._verify(uri, checksums, response)
            return PutResult(uri=uri, size=checksums.size, sha256=checksums.sha256.hex())
        with seekable_source(source) as handle:
            return self._upload(handle, uri, bucket, key)

    def _upload(self, handle: BinaryIO, uri: str, bucket: str, key: str) -> PutResult:
        """Managed (single or multipart) upload of a seekable file, then checksum verification."""
        config = self._transfer_config()
        size = handle.seek(0, io.SEEK_END)
        handle.seek(0)
        multipart = size >= config.multipart_threshold
        part_bytes = (
            ChunksizeAdjuster().adjust_chunksize(config.multipart_chunksize, size)
            if multipart
            else max(size, 1)
        )
        checksums = _checksums(handle, part_bytes)
        handle.seek(0)
        extra = {"ChecksumAlgorithm": "SHA256"} if self._checksum == "sha256" else {}
        with self._errors("upload", uri):
            self.client.upload_fileobj(handle, bucket, key, ExtraArgs=extra, Config=config)
            head = self.client.head_object(Bucket=bucket, Key=key, **self._checksum_mode())
        self._verify(uri, checksums, head)
        logger.debug("uploaded %s (%d bytes, %d part(s))", uri, size, checksums.parts)
        return PutResult(uri=uri, size=size, sha256=checksums.sha256.hex())

    def _verify(self, uri: str, checksums: _Checksums, response: dict[str, Any]) -> None:
        """Compare the store's checksum (SHA-256, else an MD5 ETag) with the local one."""
        remote = response.get("ChecksumSHA256")
        if remote:
            value, _, count = str(remote).partition("-")
            expected = checksums.expected_sha256()
            if value != expected or (count and count != str(checksums.parts)):
                raise self._mismatch(uri, "SHA-256", str(remote), expected)
            return
        etag = str(response.get("ETag") or "").strip('"')
        encrypted = response.get("ServerSideEncryption") == "aws:kms" or response.get(
            "SSECustomerAlgorithm"
        )
        if etag and not encrypted:
            expected = checksums.expected_etag()
            if etag != expected:
                raise self._mismatch(uri, "MD5 ETag", etag, expected)
            return
        logger.warning(
            "could not verify the upload of %s: the store returned no SHA-256 checksum and its "
            "ETag is not an MD5 (encrypted object?)",
            uri,
        )

    @staticmethod
    def _mismatch(uri: str, kind: str, remote: str, expected: str) -> StorageError:
        return StorageError(
            f"checksum mismatch after uploading {uri}: the store has {kind} {remote} but the local "
            f"data has {expected}; the object is corrupt or was overwritten concurrently, write it again",
            uri=uri,
        )

    def put_if_absent(self, data: bytes, uri: str) -> bool:
        bucket, key = _uri.parse_s3(uri)
        checksums = _checksums(io.BytesIO(data), max(len(data), 1))

        def attempt() -> dict[str, Any]:
            return self.client.put_object(
                Bucket=bucket, Key=key, Body=data, IfNoneMatch="*", **self._checksum_args(checksums)
            )

        with self._errors("create", uri):
            try:
                response = self._retry(
                    attempt, is_retryable=_is_conditional_conflict, what=f"conditional PUT {uri}"
                )
            except ClientError as err:
                if _is_precondition_failed(err):
                    self._log_exists(uri, err)
                    return False
                if _is_conditional_conflict(err):
                    raise StorageError(
                        f"conditional PUT of {uri} kept conflicting with concurrent writers after "
                        f"{self._cfg.max_attempts} attempts (HTTP 409 {_error_code(err)}); try again",
                        uri=uri,
                    ) from err
                raise
        self._verify(uri, checksums, response)
        logger.debug("put_if_absent %s: created", uri)
        return True

    @staticmethod
    def _log_exists(uri: str, err: ClientError) -> None:
        """Record the 412 (with code and status as record attributes) that means 'already there'."""
        code, status = _error_code(err), _http_status(err)
        retried = int(err.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0)
        extra = {
            "s3_error_code": code,
            "http_status": status,
            "uri": uri,
            "s3_retry_attempts": retried,
        }
        logger.debug(
            "put_if_absent %s: already exists (HTTP %d %s)", uri, status, code, extra=extra
        )
        if retried:
            logger.warning(
                "put_if_absent %s: the conditional PUT was retried %d time(s) before the 412, so an "
                "earlier attempt of this call may have created it; treating it as existing",
                uri,
                retried,
                extra=extra,
            )


def _permission_fix(action: str, uri: str) -> str:
    """What to grant for a 403 AccessDenied on `action` of `uri` (credentials were accepted)."""
    bucket, key = _uri.parse_s3(uri, need_key=False)
    iam_action = _IAM_ACTIONS.get(action, "the matching s3: action")
    resource = (
        f"arn:aws:s3:::{bucket}"
        if iam_action == "s3:ListBucket"
        else f"arn:aws:s3:::{bucket}/{key}"
    )
    fix = (
        f"a permissions problem, not a path or credentials one: the job's identity needs "
        f"{iam_action} on {resource} (its IAM policy, or the bucket policy of {bucket})"
    )
    if action == "read the metadata of":
        fix += f"; without s3:ListBucket on arn:aws:s3:::{bucket}, S3 also answers 403 for a key that does not exist, so check the key too"
    return fix


def _error_chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, its botocore-wrapped ``error`` and its causes/contexts (bounded)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending and len(seen) < 10:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        kwargs = getattr(item, "kwargs", None)
        wrapped = kwargs.get("error") if isinstance(kwargs, dict) else None
        pending.extend([item.__cause__, item.__context__])
        if isinstance(wrapped, BaseException):
            pending.append(wrapped)
