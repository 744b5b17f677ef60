"""One URI API over local paths and ``s3://bucket/key``.

A URI is either a local path (relative or absolute, optionally written ``file:///abs/path``) or
``s3://bucket/key``. `Storage` reads, writes, lists and deletes objects behind either kind with the
same methods and the same guarantees:

* writes are all-or-nothing: a reader sees the old object or the complete new one, never a part
  (local: temp file in the same folder, ``fsync``, ``os.replace``, ``fsync`` of the folder; S3: one
  PUT or one CompleteMultipartUpload, checksum verified after the upload);
* `Storage.put_if_absent` is the commit-marker primitive: of several writers racing on one URI,
  exactly one gets ``True`` (local: ``os.link`` of a finished temp file; S3: ``If-None-Match: *``);
* every failure is a `StorageError` (a missing object a `NotFound`) whose message names the URI and
  says what to check; credentials never appear in messages or logs.

This module knows nothing of video. The backends live in ``_storage_local`` and ``_storage_s3`` and
are imported on first use, so local-only runs never import boto3.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import threading
import unicodedata
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

if TYPE_CHECKING:
    import io

    from pipeline._storage_local import LocalBackend
    from pipeline._storage_s3 import S3Backend
    from pipeline.config import StorageConfig

__all__ = [
    "DiskFull",
    "NotFound",
    "PutResult",
    "Source",
    "Storage",
    "StorageError",
    "basename",
    "is_s3",
    "join",
    "parent",
]

logger = logging.getLogger(__name__)

MiB = 1024 * 1024

Source = bytes | bytearray | memoryview | str | os.PathLike | Iterable[bytes]
"""What `Storage.put` accepts: bytes in memory, a local file path, or an iterable of byte chunks."""


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class StorageError(RuntimeError):
    """A storage operation failed; the message says what to check.

    Attributes:
        uri: the URI the operation was about (``None`` when no single URI is involved).
        problem: what went wrong (the message without the advice).
        fix: what to do about it for this cause ("" when the message has no separate advice).
    """

    def __init__(self, message: str, *, uri: str | None = None, fix: str = "") -> None:
        super().__init__(f"{message}; {fix}" if fix else message)
        self.uri = uri
        self.problem = message
        self.fix = fix

    def __reduce__(self) -> tuple[Any, ...]:
        # keep uri, problem and fix (and a subclass's attributes) across pickling (Ray)
        return (type(self), (str(self),), self.__dict__)


class NotFound(StorageError):
    """The object or file does not exist."""


class CredentialsError(StorageError):
    """No usable credentials: none found, expired, or not accepted by the store (an unknown
    access key, a secret that does not match it)."""


class AccessDenied(StorageError):
    """The store knows the credentials but does not allow them this action on this object."""


class DiskFull(StorageError):
    """A local file system took no more data: no space left (ENOSPC), quota exceeded (EDQUOT)
    or a file-size limit reached (EFBIG). Nothing partial is left under the destination name.

    Attributes:
        reason: what happened, e.g. "no space left on device".
    """

    def __init__(self, message: str, *, uri: str | None = None, reason: str = "") -> None:
        super().__init__(message, uri=uri)
        self.reason = reason


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{1,254}$")
_MAX_S3_KEY_BYTES = 1024

# Characters that look like or act as path separators once rendered or normalised.
_SEPARATOR_LOOKALIKES = frozenset(
    "\u2044"  # FRACTION SLASH
    "\u2215"  # DIVISION SLASH
    "\u2216"  # SET MINUS
    "\u2571"  # BOX DRAWINGS LIGHT DIAGONAL UPPER RIGHT TO LOWER LEFT
    "\u2572"  # BOX DRAWINGS LIGHT DIAGONAL UPPER LEFT TO LOWER RIGHT
    "\u29f5"  # REVERSE SOLIDUS OPERATOR
    "\u29f8"  # BIG SOLIDUS
    "\u29f9"  # BIG REVERSE SOLIDUS
    "\ufe68"  # SMALL REVERSE SOLIDUS
    "\uff0f"  # FULLWIDTH SOLIDUS
    "\uff3c"  # FULLWIDTH REVERSE SOLIDUS
)
# Control, format (zero-width, bidi overrides), surrogate, private-use, unassigned, line/para sep.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI (anything else is taken as local)."""
    return isinstance(uri, str) and uri[:5].lower() == "s3://"


def _check_uri(uri: str) -> None:
    """Reject values that are not URI strings or that hold NUL, before any use."""
    if not isinstance(uri, str):
        raise StorageError(f"a URI must be a str, got {type(uri).__name__}: {uri!r}")
    if not uri:
        raise StorageError("a URI must not be empty", uri=uri)
    if "\x00" in uri:
        raise StorageError(f"URI {uri!r} contains a NUL character", uri=uri)


def _parse_s3(uri: str, *, need_key: bool = True) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty if not ``need_key``."""
    _check_uri(uri)
    bucket, _, key = uri[5:].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise StorageError(
            f"invalid bucket name {bucket!r} in {uri!r}: expected s3://bucket/key with a bucket "
            "of 3-255 letters, digits, '.', '-' or '_'",
            uri=uri,
        )
    if need_key and (not key or key.endswith("/")):
        raise StorageError(
            f"{uri!r} names no object: expected s3://{bucket}/<key> with a key not ending in '/'",
            uri=uri,
        )
    if len(key.encode("utf-8", "surrogatepass")) > _MAX_S3_KEY_BYTES:
        raise StorageError(f"S3 key of {uri!r} is longer than 1024 bytes", uri=uri)
    return bucket, key


def _local_path(uri: str) -> str:
    """Turn a local URI (``file:///x``, ``/x``, ``x``) into a path; reject other schemes."""
    _check_uri(uri)
    match = _SCHEME_RE.match(uri)
    if match is None:
        return uri
    scheme = match.group(1).lower()
    if scheme == "s3":
        raise StorageError(f"{uri!r} is an S3 URI, not a local path", uri=uri)
    if scheme != "file":
        raise StorageError(
            f"unsupported URI scheme {scheme!r} in {uri!r}; use a local path, file:///abs/path "
            "or s3://bucket/key",
            uri=uri,
        )
    parsed = urllib.parse.urlsplit(uri)
    if parsed.netloc not in ("", "localhost"):
        raise StorageError(
            f"file URI {uri!r} names host {parsed.netloc!r}; only file:///abs/path (no host) is "
            "supported",
            uri=uri,
        )
    path = urllib.parse.unquote(parsed.path)
    if not path or "\x00" in path:
        raise StorageError(f"file URI {uri!r} has no usable path", uri=uri)
    return path


def _segment_problem(segment: str) -> str | None:
    """Why one ``/``-separated segment of a join() part is unsafe, or None if it is fine."""
    if segment == "":
        return "it has an empty segment (a leading, doubled or trailing '/')"
    if segment in (".", ".."):
        return f"{segment!r} segments are not allowed"
    for char in segment:
        if char == "\x00":
            return "it contains a NUL character"
        if char == "\\":
            return "it contains a backslash"
        if char in _SEPARATOR_LOOKALIKES:
            return f"it contains {unicodedata.name(char, hex(ord(char)))} (U+{ord(char):04X}), which looks like a path separator"
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            return f"it contains U+{ord(char):04X} (Unicode category {category}: control, format or unassigned)"
    normalised = unicodedata.normalize("NFKC", segment)
    if "/" in normalised or "\\" in normalised or normalised in (".", ".."):
        return f"it normalises (NFKC) to {normalised!r}, a path separator or dot segment"
    return None


def _check_part(index: int, part: str) -> None:
    """Raise `StorageError` if one join() part could escape the base or is otherwise unsafe."""
    if not isinstance(part, str):
        raise StorageError(f"join(): part {index} must be a str, got {type(part).__name__}")
    if part.startswith("/") or _SCHEME_RE.match(part):
        raise StorageError(
            f"join(): part {index} ({part!r}) is absolute; parts must be relative names"
        )
    for segment in part.split("/"):
        problem = _segment_problem(segment)
        if problem is not None:
            raise StorageError(
                f"join(): part {index} ({part!r}) is refused because {problem}; parts must be "
                "relative names without '..', '\\', NUL or control characters"
            )


def join(uri: str, *parts: str) -> str:
    """Append relative ``parts`` to ``uri``; refuse any part that could escape it.

    Each part may hold several ``/``-separated names. Refused (`StorageError` naming the part and
    why): absolute parts, empty, ``.`` or ``..`` segments, NUL and control characters, backslashes,
    bidi/zero-width format characters, and Unicode lookalikes of ``/`` and ``\\`` (also after NFKC
    normalisation). Local URIs come back as plain paths (``file://`` dropped).
    """
    for index, part in enumerate(parts):
        _check_part(index, part)
    if is_s3(uri):
        bucket, key = _parse_s3(uri, need_key=False)
        prefix = key.rstrip("/")
        joined = "/".join(([prefix] if prefix else []) + list(parts))
        return f"s3://{bucket}/{joined}"
    base = _local_path(uri)
    return posixpath.join(base, *parts)


def parent(uri: str) -> str:
    """The URI one level up: ``s3://b/a/x`` -> ``s3://b/a``; ``s3://b/x`` -> ``s3://b``."""
    if is_s3(uri):
        bucket, key = _parse_s3(uri, need_key=False)
        head = posixpath.dirname(key.rstrip("/"))
        return f"s3://{bucket}/{head}" if head else f"s3://{bucket}"
    path = _local_path(uri)
    stripped = path.rstrip("/") or "/"
    return posixpath.dirname(stripped) or "."


def basename(uri: str) -> str:
    """The last name of the URI (``s3://b/a/x.mp4`` -> ``x.mp4``; a bucket alone -> ``""``)."""
    if is_s3(uri):
        _, key = _parse_s3(uri, need_key=False)
        return posixpath.basename(key.rstrip("/"))
    return posixpath.basename(_local_path(uri).rstrip("/"))


# --------------------------------------------------------------------------------------------
# Sources and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PutResult:
    """What `Storage.put` wrote.

    Attributes:
        uri: where the object now is.
        size: its size in bytes.
        sha256: hex SHA-256 of its content (for commit markers and ledgers).
    """

    uri: str
    size: int
    sha256: str


def _source_path(source: Source) -> str | None:
    """The local file path if ``source`` names one, else None (bytes or an iterable)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if is_s3(path):
            raise StorageError(
                f"put(): source {path!r} is an S3 URI; the source must be bytes, a local file "
                "path or an iterable of bytes",
                uri=path,
            )
        return _local_path(path)
    return None


def _open_source_file(path: str) -> BinaryIO:
    """Open a local file given to ``put()``; a missing or unreadable one is a StorageError."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the callers close it
    except FileNotFoundError as err:
        raise NotFound(f"put(): source file {path!r} not found", uri=path) from err
    except OSError as err:
        raise StorageError(
            f"put(): cannot read source file {path!r}: {err.strerror}", uri=path
        ) from err


def _iter_source(source: Source, *, chunk_bytes: int = MiB) -> Iterator[bytes]:
    """Yield the content of ``source`` as byte chunks (bytes, local file or iterable of bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    path = _source_path(source)
    if path is not None:
        with _open_source_file(path) as handle:
            while chunk := handle.read(chunk_bytes):
                yield chunk
        return
    if not isinstance(source, Iterable):
        raise StorageError(
            f"put(): source must be bytes, a local file path or an iterable of bytes, got "
            f"{type(source).__name__}"
        )
    for chunk in source:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise StorageError(
                f"put(): the source iterable yielded {type(chunk).__name__}; it must yield bytes"
            )
        yield bytes(chunk)


# --------------------------------------------------------------------------------------------
# Storage
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
    """Reads and writes local paths and ``s3://`` URIs with one API.

    Thread-safe (one boto3 client per instance, created lazily under a lock) and picklable (the
    client is not pickled; a copy creates its own on first use), so it can be shipped to Ray workers.

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
        self._local: LocalBackend | None = None
        self._s3: S3Backend | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self._cfg, "options": dict(self._options)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._cfg = state["cfg"]
        self._options = state["options"]
        self._init_runtime()

    def __repr__(self) -> str:
        return f"Storage(endpoint_url={self._cfg.s3.endpoint_url!r}, output_root={self._cfg.output_root!r})"

    # -- backends ------------------------------------------------------------------------------

    def _local_backend(self) -> LocalBackend:
        if self._local is None:
            from pipeline._storage_local import LocalBackend  # lazy: avoids an import cycle

            with self._lock:
                if self._local is None:
                    self._local = LocalBackend()
        return self._local

    def _s3_backend(self) -> S3Backend:
        if self._s3 is None:
            from pipeline._storage_s3 import S3Backend  # lazy: boto3 only when S3 is used

            with self._lock:
                if self._s3 is None:
                    self._s3 = S3Backend(self._cfg.s3, **self._options)
        return self._s3

    def _backend(self, uri: str) -> LocalBackend | S3Backend:
        _check_uri(uri)
        return self._s3_backend() if is_s3(uri) else self._local_backend()

    @property
    def s3_client(self) -> Any:
        """The boto3 S3 client (created on first use; thread-safe), e.g. for event hooks."""
        return self._s3_backend().client

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
        """The absolute local path for a local URI; None for S3."""
        if is_s3(uri):
            return None
        return os.path.abspath(_local_path(uri))

    def download(self, uri: str, local_path: str | os.PathLike[str]) -> None:
        """Copy the object to ``local_path`` atomically (complete file or nothing)."""
        dest = _local_path(os.fspath(local_path))
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
