"""What a storage backend is: the `Backend` protocol `Storage` calls, what ``put`` accepts and
returns, and the parts every backend shares (reading a put source, a seekable ranged reader).

A backend module (``_local``, ``_s3``, ``_azure``) defines a class that follows `Backend` and a
``create(cfg, options)`` function; `pipeline.storage._uri.SCHEMES` says which module serves which
scheme. Backends import only this module, ``_errors``, ``_uri`` and ``_atomic``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, Protocol, TypeVar

from . import _uri
from ._errors import NotFound, StorageError

MiB = 1024 * 1024

T = TypeVar("T")


class Lazy(Generic[T]):
    """A backend's SDK client, made on first use and once, however many threads ask at once."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._value: T | None = None

    def __call__(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._make()
        return self._value

    @property
    def made(self) -> T | None:
        """The value if it was made already (messages use it without making it)."""
        return self._value


Source = bytes | bytearray | memoryview | str | os.PathLike | Iterable[bytes]
"""What `Storage.put` accepts: bytes in memory, a local file path, or an iterable of byte chunks."""


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


class Backend(Protocol):
    """The operations `pipeline.storage.Storage` delegates for the URIs of one scheme.

    Each takes URIs of its own scheme (already checked by `_uri.check_uri`); failures are
    `StorageError` (`NotFound` for a missing object). The guarantees are the facade's: see
    `Storage`.
    """

    def exists(self, uri: str) -> bool: ...
    def size(self, uri: str) -> int: ...
    def fingerprint(self, uri: str) -> str: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def open(self, uri: str) -> io.BufferedReader: ...
    def list(self, prefix_uri: str) -> list[tuple[str, int]]: ...
    def download(self, uri: str, local_path: str) -> None: ...
    def put(self, source: Source, uri: str) -> PutResult: ...
    def put_if_absent(self, data: bytes, uri: str) -> bool: ...
    def delete(self, uri: str) -> None: ...


class RangedStore(Protocol):
    """A backend that can read a byte range of an object pinned to a version tag (ETag)."""

    def read_range(self, uri: str, start: int, length: int, etag: str | None) -> bytes: ...


# --------------------------------------------------------------------------------------------
# Put sources
# --------------------------------------------------------------------------------------------


def source_path(source: Source) -> str | None:
    """The local file path if ``source`` names one, else None (bytes or an iterable)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        rules = _uri.remote_scheme(path)
        if rules is not None:
            raise StorageError(
                f"put(): source {path!r} is an {rules.title} URI; the source must be bytes, a "
                "local file path or an iterable of bytes",
                uri=path,
            )
        return _uri.local_path(path)
    return None


def open_source_file(path: str) -> BinaryIO:
    """Open a local file given to ``put()``; a missing or unreadable one is a StorageError."""
    try:
        return open(path, "rb")  # noqa: SIM115 - the callers close it
    except FileNotFoundError as err:
        raise NotFound(f"put(): source file {path!r} not found", uri=path) from err
    except OSError as err:
        raise StorageError(
            f"put(): cannot read source file {path!r}: {err.strerror}", uri=path
        ) from err


def iter_source(source: Source, *, chunk_bytes: int = MiB) -> Iterator[bytes]:
    """Yield the content of ``source`` as byte chunks (bytes, local file or iterable of bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield bytes(source)
        return
    path = source_path(source)
    if path is not None:
        with open_source_file(path) as handle:
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


@contextlib.contextmanager
def seekable_source(source: Source) -> Iterator[BinaryIO]:
    """``source`` as a seekable binary file (iterables are spooled to a temp file)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(source)
        return
    path = source_path(source)
    if path is not None:
        with open_source_file(path) as handle:
            yield handle
        return
    with tempfile.TemporaryFile(prefix="storage-put-") as spool:
        for chunk in iter_source(source):
            spool.write(chunk)
        spool.seek(0)
        yield spool


# --------------------------------------------------------------------------------------------
# Streaming reader
# --------------------------------------------------------------------------------------------


class RangeReader(io.RawIOBase):
    """Seekable raw reader over one remote object; each read is one bounded ranged GET.

    Wrap it in ``io.BufferedReader`` (see `open_ranged`). Reads are pinned to the ETag seen at
    open time, so a replaced object fails loudly instead of mixing two versions.
    """

    def __init__(
        self, store: RangedStore, uri: str, *, size: int, etag: str | None, request_bytes: int
    ) -> None:
        super().__init__()
        self._store = store
        self._uri = uri
        self._size = size
        self._etag = etag
        self._request_bytes = request_bytes
        self._position = 0

    @property
    def name(self) -> str:
        """The URI being read."""
        return self._uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._uri!r}, size={self._size})"

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed reader of {self._uri}")

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            base = 0
        elif whence == io.SEEK_CUR:
            base = self._position
        elif whence == io.SEEK_END:
            base = self._size
        else:
            raise ValueError(
                f"invalid whence ({whence}); supported: 0 (SEEK_SET), 1 (SEEK_CUR), 2 (SEEK_END)"
            )
        position = base + offset
        if position < 0:  # as a real file does: an OSError (EINVAL), which PyAV reports as I/O
            raise OSError(errno.EINVAL, f"negative seek position {position}")
        self._position = position
        return position

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        length = min(len(view), self._size - self._position, self._request_bytes)
        if length <= 0:
            return 0
        data = self._store.read_range(self._uri, self._position, length, self._etag)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(self._request_bytes):
            chunks.append(chunk)
        return b"".join(chunks)


def open_ranged(
    store: RangedStore, uri: str, *, size: int, etag: str | None, block_bytes: int
) -> io.BufferedReader:
    """A buffered, seekable reader of ``uri`` that fetches ``block_bytes`` per ranged read."""
    raw = RangeReader(store, uri, size=size, etag=etag, request_bytes=block_bytes)
    return io.BufferedReader(raw, buffer_size=block_bytes)
