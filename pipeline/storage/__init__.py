"""One URI API over local paths and remote object stores (``s3://bucket/key``, ``az://container/blob``).

A URI is either a local path (relative or absolute, optionally written ``file:///abs/path``) or a
remote object URI of a scheme in `pipeline.storage._uri.SCHEMES`. `Storage` reads, writes, lists and
deletes objects behind any of them with the same methods and the same guarantees:

* writes are all-or-nothing: a reader sees the old object or the complete new one, never a part
  (local: temp file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of the folder; S3: one
  PUT or one CompleteMultipartUpload, checksum verified after the upload; Azure: one Put Blob or one
  Put Block List, MD5 verified by the service);
* `Storage.put_if_absent` is the commit-marker primitive: of several writers racing on one URI,
  exactly one gets ``True`` (local: ``os.link`` of a finished temp file; S3 and Azure:
  ``If-None-Match: *``);
* every failure is a `StorageError` (a missing object a `NotFound`) whose message names the URI and
  says what to check; credentials never appear in messages or logs.

The package knows nothing of video. Its rooms, bottom up: ``_errors`` (the exceptions), ``_uri``
(every parse, join and name check of a URI, and which backend serves which scheme), ``_backend``
(the `Backend` protocol, put sources, the ranged reader), ``_atomic`` (the one atomic local write),
then one module per backend (``_local``, ``_s3``, ``_azure``), imported on first use so that
local-only runs never import boto3 or the Azure SDK. This module is the facade above them.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from . import _uri
from ._backend import MiB, PutResult, Source
from ._errors import AccessDenied, CredentialsError, DiskFull, NotFound, StorageError
from ._uri import (
    FORBIDDEN_CATEGORIES,
    SEPARATOR_LOOKALIKES,
    basename,
    has_scheme,
    inside_roots,
    is_remote,
    is_s3,
    join,
    normalise,
    parent,
    relative_path,
    remote_scheme,
    resolve,
    scheme_of,
    split_roots,
)

if TYPE_CHECKING:
    import io

    from pipeline.config import StorageConfig

    from ._backend import Backend

__all__ = [
    "FORBIDDEN_CATEGORIES",
    "SEPARATOR_LOOKALIKES",
    "AccessDenied",
    "CredentialsError",
    "DiskFull",
    "MiB",
    "NotFound",
    "PutResult",
    "Source",
    "Storage",
    "StorageError",
    "basename",
    "has_scheme",
    "inside_roots",
    "is_remote",
    "is_s3",
    "join",
    "normalise",
    "parent",
    "relative_path",
    "remote_scheme",
    "resolve",
    "scheme_of",
    "split_roots",
]

logger = logging.getLogger(__name__)

MediaInput = str | BinaryIO
"""What `Storage.open_input` yields: a local path, or a seekable binary stream of a remote object."""


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------

_CHECKSUM_MODES = ("when_supported", "when_required")
_RETRY_MODES = ("standard", "adaptive")


def _validate_endpoint(endpoint_url: str | None) -> None:
    """An endpoint must be ``http(s)://host[:port]`` and must not carry credentials."""
    if endpoint_url is None:
        return
    parts = urllib.parse.urlsplit(str(endpoint_url))
    if parts.username is not None or parts.password is not None:
        raise StorageError(
            "storage.s3.endpoint_url must not contain credentials (user:password@); take them "
            "from the AWS chain (environment, profile or instance role) instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageError(
            f"storage.s3.endpoint_url={endpoint_url!r} is invalid; expected http(s)://host[:port], "
            "e.g. http://127.0.0.1:9000"
        )


def _validate(cfg: StorageConfig, retry_mode: str, checksum: str) -> None:
    """Check the S3 settings up front so a bad value fails at construction, not mid-run."""
    s3 = cfg.s3
    for name in ("request_checksum_calculation", "response_checksum_validation"):
        value = getattr(s3, name)
        if value not in _CHECKSUM_MODES:
            raise StorageError(
                f"storage.s3.{name}={value!r} is invalid; allowed: {', '.join(map(repr, _CHECKSUM_MODES))}"
            )
    for name in ("multipart_threshold_mb", "multipart_chunksize_mb", "max_attempts"):
        value = getattr(s3, name)
        if not isinstance(value, int) or value < 1:
            raise StorageError(
                f"storage.s3.{name}={value!r} is invalid; it must be an integer >= 1"
            )
    for name in ("connect_timeout_s", "read_timeout_s"):
        value = getattr(s3, name)
        if not isinstance(value, (int, float)) or value <= 0:
            raise StorageError(f"storage.s3.{name}={value!r} is invalid; it must be > 0")
    _validate_endpoint(s3.endpoint_url)
    if retry_mode not in _RETRY_MODES:
        raise StorageError(f"retry_mode={retry_mode!r} is invalid; allowed: 'standard', 'adaptive'")
    if checksum not in ("sha256", "md5"):
        raise StorageError(f"checksum={checksum!r} is invalid; allowed: 'sha256', 'md5'")


class Storage:
    """Reads and writes local paths and remote object URIs with one API.

    The backend of each URI is chosen by its scheme (`pipeline.storage._uri.SCHEMES`) and created
    on first use. Thread-safe (one backend, hence one boto3 client, per scheme and instance, created
    lazily under a lock) and picklable (the backends are not pickled; a copy creates its own on
    first use), so it can be shipped to Ray workers.

    Args:
        cfg: ``StorageConfig`` (or the matching Hydra node); ``cfg.s3`` configures S3 access.
        retry_mode: botocore retry mode, ``"standard"`` or ``"adaptive"`` (client-side rate limiting).
        checksum: how S3 uploads are verified: ``"sha256"`` (flexible checksums, the default) or
            ``"md5"`` (ETag/Content-MD5, for stores without flexible checksums).
        read_block_bytes: size of each ranged GET (and of the read buffer) of `open` on S3.
        backoff_base_s: first delay of this module's own retries (conditional-write conflicts,
            interrupted response bodies); doubles per attempt, full jitter, capped at 20 s.
    """

    def __init__(
        self,
        cfg: StorageConfig,
        *,
        retry_mode: Literal["standard", "adaptive"] | None = None,
        checksum: Literal["sha256", "md5"] | None = None,
        read_block_bytes: int | None = None,
        backoff_base_s: float = 0.2,
    ) -> None:
        retry_mode = retry_mode or cfg.s3.retry_mode  # type: ignore[assignment]
        checksum = checksum or cfg.s3.checksum  # type: ignore[assignment]
        read_block_bytes = read_block_bytes or cfg.s3.read_block_mb * MiB
        _validate(cfg, retry_mode, checksum)
        if read_block_bytes < 1:
            raise StorageError(f"read_block_bytes={read_block_bytes} is invalid; it must be >= 1")
        self._cfg = cfg
        self._options: dict[str, Any] = {
            "retry_mode": retry_mode,
            "checksum": checksum,
            "read_block_bytes": read_block_bytes,
            "backoff_base_s": backoff_base_s,
        }
        self._init_runtime()

    def _init_runtime(self) -> None:
        """Create the unpicklable parts: the lock and the (lazy) backends."""
        self._lock = threading.Lock()
        self._backends: dict[str, Backend] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self._cfg, "options": dict(self._options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._cfg = state["cfg"]
        self._options = state["options"]
        self._init_runtime()

    def __repr__(self) -> str:
        return f"Storage(endpoint_url={self._cfg.s3.endpoint_url!r}, output_root={self._cfg.output_root!r})"

    # -- backends ------------------------------------------------------------------------------

    def _backend_named(self, module: str) -> Backend:
        """The backend of ``module`` (``_local``, ``_s3``, ...), imported and created once."""
        backend = self._backends.get(module)
        if backend is None:
            with self._lock:
                backend = self._backends.get(module)
                if backend is None:
                    # lazy: boto3 (or the Azure SDK) only when a URI of its scheme is used
                    backend = importlib.import_module(f"{__name__}.{module}").create(
                        self._cfg, self._options
                    )
                    self._backends[module] = backend
        return backend

    def _backend(self, uri: str) -> Backend:
        _uri.check_uri(uri)
        try:
            return self._backend_named(_uri.backend_module(uri))
        except ModuleNotFoundError as err:
            rules = _uri.remote_scheme(uri)
            if rules is None or rules.extra is None:
                raise
            raise StorageError(
                f"{rules.name}:// URIs need the {rules.extra!r} extra, which is not installed "
                f"({err.name} is missing): pip install -e '.[{rules.extra}]'",
                uri=uri,
            ) from err

    @property
    def s3_client(self) -> Any:
        """The boto3 S3 client (created on first use; thread-safe), e.g. for event hooks."""
        return self._backend_named(_uri.SCHEMES["s3"].backend).client  # type: ignore[attr-defined]

    # -- reading -------------------------------------------------------------------------------

    def exists(self, uri: str) -> bool:
        """Whether an object (a regular file, locally) exists at ``uri``. Folders are not objects."""
        return self._backend(uri).exists(uri)

    def size(self, uri: str) -> int:
        """Size of the object in bytes; `NotFound` if it does not exist."""
        return self._backend(uri).size(uri)

    def fingerprint(self, uri: str) -> str:
        """A cheap identity of the object's content, for noticing changed inputs.

        Local: size, modification time and a hash of the first and last 64 KiB; S3: size and ETag.
        """
        return self._backend(uri).fingerprint(uri)

    def read_bytes(self, uri: str) -> bytes:
        """The whole object in memory (for small things: manifests, markers, JSON)."""
        return self._backend(uri).read_bytes(uri)

    def open(self, uri: str) -> io.BufferedReader:
        """Open the object for binary reading; seekable, usable as a PyAV input.

        On S3 the reader streams with ranged GETs of ``read_block_bytes`` (never the whole object
        at once) and fails with `StorageError` if the object is replaced while it is being read.
        """
        return self._backend(uri).open(uri)

    def list(self, prefix_uri: str) -> list[tuple[str, int]]:
        """All objects under the folder ``prefix_uri``, recursively, as sorted ``(uri, size)``.

        ``prefix_uri`` is a folder: ``s3://b/out`` lists ``out/...`` but not ``out2``. A missing
        folder gives an empty list. In-flight temp files of local writes are not listed.
        """
        return self._backend(prefix_uri).list(prefix_uri)

    def local_path(self, uri: str) -> str | None:
        """The absolute local path for a local URI; None for a remote one."""
        return _uri.absolute_local_path(uri)

    @contextmanager
    def open_input(self, uri: str) -> Iterator[MediaInput]:
        """An input for readers that take "a local path or a seekable stream" (PyAV, PIL, the
        validation sniffers): a local URI as its absolute path (not opened; a missing file is the
        reader's to report), a remote one as `open`'s stream, closed afterwards."""
        local = self.local_path(uri)
        if local is not None:
            yield local
            return
        with self.open(uri) as stream:
            yield stream

    def download(self, uri: str, local_path: str | os.PathLike[str]) -> None:
        """Copy the object to ``local_path`` atomically (complete file or nothing)."""
        dest = _uri.local_path(os.fspath(local_path))
        try:
            self._backend(uri).download(uri, dest)
        except DiskFull as err:  # a local copy (scratch), not the output root: say so
            raise DiskFull(
                f"{err.reason} writing {dest} (a local copy of {uri}); free space on that disk "
                "(render workers keep their scratch files under TMPDIR)",
                uri=dest,
                reason=err.reason,
            ) from err

    # -- writing -------------------------------------------------------------------------------

    def put(self, source: Source, uri: str) -> PutResult:
        """Write ``source`` (bytes, a local file path or an iterable of bytes) to ``uri``, atomically.

        Local: temp file in the same folder, fsync, ``os.replace``, fsync of the folder; if the
        source fails midway nothing is left behind. S3: one PUT below
        ``storage.s3.multipart_threshold_mb``, else a multipart upload; the store's checksum is
        compared with the local one afterwards and a mismatch raises `StorageError`.
        """
        return self._backend(uri).put(source, uri)

    def put_if_absent(self, data: bytes, uri: str) -> bool:
        """Create ``uri`` with ``data`` only if nothing exists there: the commit-marker primitive.

        Returns True if this call created it, False if it already existed (never both True for two
        racing writers). S3: PUT with ``If-None-Match: *`` (HTTP 412 -> False; 409 conflicts are
        retried). Local: temp file, fsync, ``os.link`` (fails if the name exists), fsync.
        When an S3 request had to be retried, False may mean that an earlier attempt of this very
        call created the object; False is the safe answer then (nobody double-commits).
        """
        return self._backend(uri).put_if_absent(bytes(data), uri)

    def delete(self, uri: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        self._backend(uri).delete(uri)
