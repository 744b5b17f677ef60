"""Azure Blob Storage backend of `pipeline.storage` (``az://container/blob``), on azure-storage-blob.

The SDK does the hard parts: its pipeline retries transient failures (connection errors, timeouts,
408/429/5xx) with exponential backoff, ``storage.azure.max_attempts`` attempts in all; large uploads
go as blocks committed by one Put Block List, so a reader sees the old blob or the whole new one;
``overwrite=False`` is ``If-None-Match: *``, the commit-marker primitive; ranged downloads take an
``If-Match`` ETag, so a blob replaced while it is read fails instead of mixing two versions.

Credentials come from the environment, never from config: ``AZURE_STORAGE_CONNECTION_STRING``, or
``AZURE_STORAGE_ACCOUNT`` with ``AZURE_STORAGE_KEY`` (shared key) for ``storage.azure.account_url``.
Messages name the URI and the endpoint, never a key.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContentSettings

from . import _uri
from ._atomic import write_atomically
from ._backend import Lazy, MiB, PutResult, Source, open_ranged, seekable_source
from ._errors import AccessDenied, CredentialsError, NotFound, StorageError

if TYPE_CHECKING:
    from pipeline.config import AzureConfig, StorageConfig

logger = logging.getLogger(__name__)

_HASH_CHUNK = MiB
NO_CREDENTIALS_FIX = (
    "give the job Azure credentials in the environment: AZURE_STORAGE_CONNECTION_STRING, or "
    "AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (with storage.azure.account_url); never in a "
    "config file"
)


def create(cfg: StorageConfig, options: dict[str, Any]) -> AzureBackend:
    """The backend `Storage` uses for ``az://`` URIs, configured by ``storage.azure``."""
    return AzureBackend(cfg.azure, read_block_bytes=options["read_block_bytes"])


class AzureBackend:
    """`pipeline.storage.Storage` operations on ``az://`` URIs (see the module docstring)."""

    def __init__(self, cfg: AzureConfig, *, read_block_bytes: int) -> None:
        self._cfg = cfg
        self._read_block_bytes = read_block_bytes
        self._service: Lazy[BlobServiceClient] = Lazy(self._create_service)

    # -- client --------------------------------------------------------------------------------

    @property
    def service(self) -> BlobServiceClient:
        """The SDK's service client, created once on first use."""
        return self._service()

    def _create_service(self) -> BlobServiceClient:
        cfg = self._cfg
        options: dict[str, Any] = {
            "retry_total": max(cfg.max_attempts - 1, 0),
            "connection_timeout": cfg.connect_timeout_s,
            "read_timeout": cfg.read_timeout_s,
        }
        connection_string = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        try:
            if connection_string:
                return BlobServiceClient.from_connection_string(connection_string, **options)
            account = os.environ.get("AZURE_STORAGE_ACCOUNT")
            key = os.environ.get("AZURE_STORAGE_KEY")
            url = cfg.account_url or (
                f"https://{account}.blob.core.windows.net" if account else None
            )
            if not url or not account or not key:
                raise CredentialsError(
                    "no Azure credentials found to reach the blob store", fix=NO_CREDENTIALS_FIX
                )
            credential = {"account_name": account, "account_key": key}
            return BlobServiceClient(url, credential=credential, **options)
        except ValueError as err:  # a malformed connection string or URL; its text may hold a key
            raise StorageError(
                "AZURE_STORAGE_CONNECTION_STRING or storage.azure.account_url is not usable; "
                "check its form (DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...;"
                "BlobEndpoint=...)"
            ) from err

    def _endpoint_text(self) -> str:
        service = self._service.made
        url = service.url if service is not None else self._cfg.account_url
        return _uri.redact_url(url) if url else "the Azure blob endpoint"

    def _blob(self, uri: str, *, need_key: bool = True) -> Any:
        container, key = _uri.split(uri, need_key=need_key)
        return self.service.get_blob_client(container, key)

    # -- errors --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, uri: str) -> Iterator[None]:
        """Turn the SDK's errors raised inside into `StorageError` for ``uri``."""
        try:
            yield
        except AzureError as err:
            raise self._to_storage_error(err, action, uri) from err

    def _to_storage_error(self, err: AzureError, action: str, uri: str) -> StorageError:
        endpoint = self._endpoint_text()
        status = int(getattr(err, "status_code", 0) or 0)
        code = getattr(err, "error_code", None) or ""
        code = str(getattr(code, "value", code))  # the SDK gives a StorageErrorCode enum or a str
        what = f"HTTP {status} {code}".strip() if status else type(err).__name__
        if code == "ContainerNotFound":
            return NotFound(
                f"the container of {uri} does not exist at {endpoint} ({what})",
                uri=uri,
                fix="check the container name in the URI and storage.azure.account_url",
            )
        if isinstance(err, ResourceNotFoundError) or status == 404:
            return NotFound(
                f"{uri} not found ({what})",
                uri=uri,
                fix="check the path: container and blob name (names are case-sensitive)",
            )
        if isinstance(err, ClientAuthenticationError) and status != 403 or status == 401:
            return CredentialsError(
                f"{endpoint} did not accept the credentials to {action} {uri} ({what})",
                uri=uri,
                fix=NO_CREDENTIALS_FIX,
            )
        if status == 403:
            if code in ("AuthenticationFailed", "InvalidAuthenticationInfo"):
                return CredentialsError(
                    f"{endpoint} did not accept the credentials to {action} {uri} ({what})",
                    uri=uri,
                    fix="check AZURE_STORAGE_KEY (or the connection string's AccountKey) belongs "
                    "to this account",
                )
            return AccessDenied(
                f"{endpoint} denied access to {action} {uri} ({what})",
                uri=uri,
                fix="a permissions problem, not a path or credentials one: give the job's "
                "identity a role that allows it on the container (e.g. Storage Blob Data Contributor)",
            )
        if isinstance(err, (ServiceRequestError, ServiceResponseError)):
            return StorageError(
                f"could not reach Azure endpoint {endpoint} after {self._cfg.max_attempts} "
                f"attempts ({type(err).__name__}) to {action} {uri}",
                uri=uri,
                fix="check storage.azure.account_url (or the connection string) and that the "
                "store is up",
            )
        if status >= 500 or status == 429:
            return StorageError(
                f"Azure endpoint {endpoint} kept failing to {action} {uri} after "
                f"{self._cfg.max_attempts} attempts ({what}); the store is overloaded or down, "
                "try again later",
                uri=uri,
            )
        return StorageError(f"Azure refused to {action} {uri} at {endpoint} ({what})", uri=uri)

    # -- reading -------------------------------------------------------------------------------

    def _properties(self, uri: str) -> Any:
        with self._errors("read the metadata of", uri):
            return self._blob(uri).get_blob_properties()

    def exists(self, uri: str) -> bool:
        try:
            self._properties(uri)
        except NotFound:
            return False
        return True

    def size(self, uri: str) -> int:
        return int(self._properties(uri).size)

    def fingerprint(self, uri: str) -> str:
        properties = self._properties(uri)
        return f"az:{int(properties.size)}:{str(properties.etag).strip(chr(34))}"

    def read_bytes(self, uri: str) -> bytes:
        with self._errors("read", uri):
            return self._blob(uri).download_blob().readall()

    def read_range(self, uri: str, start: int, length: int, etag: str | None) -> bytes:
        """``length`` bytes of ``uri`` from ``start`` in one ranged GET (pinned to ``etag``)."""
        pinned = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        with self._errors("read", uri):
            try:
                data = (
                    self._blob(uri).download_blob(offset=start, length=length, **pinned).readall()
                )
            except ResourceModifiedError as err:
                raise StorageError(
                    f"{uri} was replaced while it was being read (its ETag is no longer "
                    f"{etag}); read it again",
                    uri=uri,
                ) from err
        if len(data) != length:
            raise StorageError(
                f"could not read {uri}: got {len(data)} of {length} bytes at offset {start}",
                uri=uri,
            )
        return data

    def open(self, uri: str) -> io.BufferedReader:
        properties = self._properties(uri)
        return open_ranged(
            self,
            uri,
            size=int(properties.size),
            etag=properties.etag,
            block_bytes=self._read_block_bytes,
        )

    def list(self, prefix_uri: str) -> list[tuple[str, int]]:
        container, key = _uri.split(prefix_uri, need_key=False)
        prefix = _uri.listing_prefix(key)
        found: list[tuple[str, int]] = []
        with self._errors("list", prefix_uri):
            client = self.service.get_container_client(container)
            for item in client.list_blobs(name_starts_with=prefix or None):
                found.append((_uri.make("az", container, item.name), int(item.size)))
        return sorted(found)

    def download(self, uri: str, local_path: str) -> None:
        blob = self._blob(uri)
        with self._errors("download", uri):
            write_atomically(local_path, lambda handle: blob.download_blob().readinto(handle))

    # -- writing -------------------------------------------------------------------------------

    def delete(self, uri: str) -> None:
        with self._errors("delete", uri):
            try:
                self._blob(uri).delete_blob()
            except ResourceNotFoundError:
                return

    def put(self, source: Source, uri: str) -> PutResult:
        blob = self._blob(uri)
        with seekable_source(source) as handle:
            sha256, md5, size = _digests(handle)
            handle.seek(0)
            with self._errors("write", uri):
                # validate_content: each request carries an MD5 the service checks
                blob.upload_blob(
                    handle,
                    length=size,
                    overwrite=True,
                    validate_content=True,
                    content_settings=ContentSettings(content_md5=md5),
                )
        logger.debug("uploaded %s (%d bytes)", uri, size)
        return PutResult(uri=uri, size=size, sha256=sha256)

    def put_if_absent(self, data: bytes, uri: str) -> bool:
        blob = self._blob(uri)
        with self._errors("create", uri):
            try:
                blob.upload_blob(data, overwrite=False, validate_content=True)
            except ResourceExistsError:
                logger.debug("put_if_absent %s: already exists", uri)
                return False
        logger.debug("put_if_absent %s: created", uri)
        return True


def _digests(handle: Any) -> tuple[str, bytearray, int]:
    """Hex SHA-256, raw MD5 and size of ``handle`` from its current position (one pass)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = 0
    while chunk := handle.read(_HASH_CHUNK):
        sha.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), bytearray(md5.digest()), size
