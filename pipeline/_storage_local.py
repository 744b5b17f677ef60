"""Local-disk backend of `pipeline.storage`: atomic writes by temp file, fsync and rename or link.

A write goes to ``.<name>.<random>.partial`` in the destination's folder (same file system, so the
rename is atomic), is flushed and fsynced, then ``os.replace``d onto the final name (or, for
`LocalBackend.put_if_absent`, hard-linked to it, which fails if the name exists), and finally the
folder is fsynced so the new name survives a power cut. If the writer fails, the temp file is
removed; if it is killed, only a ``.partial`` file is left, which `LocalBackend.list` ignores.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import re
import secrets
import stat
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from pipeline.storage import (
    DiskFull,
    NotFound,
    PutResult,
    Source,
    StorageError,
    _iter_source,
    _local_path,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_TEMP_SUFFIX = ".partial"
_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{16}\.partial$")
_MAX_TEMP_STEM = 200  # keeps the temp name under the usual 255-byte NAME_MAX
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}
_DIR_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


def is_temp_name(name: str) -> bool:
    """Whether a file name is an in-flight (or abandoned) temp file of an atomic write."""
    return bool(_TEMP_RE.match(name))


def _temp_path(dest: str) -> str:
    """A fresh temp name next to ``dest``."""
    folder, name = os.path.split(dest)
    return os.path.join(folder, f".{name[:_MAX_TEMP_STEM]}.{secrets.token_hex(8)}{_TEMP_SUFFIX}")


# errno -> (what happened, what to do) for a file system that cannot take more data
_FULL = {
    errno.ENOSPC: ("no space left on device", "free space or choose another storage.output_root"),
    errno.EDQUOT: (
        "disk quota exceeded",
        "free space, raise the quota or choose another storage.output_root",
    ),
    errno.EFBIG: (
        "file too large (a file-size limit such as ulimit -f, or the file system's largest file)",
        "raise the limit or choose another storage.output_root",
    ),
}


def _os_error(action: str, path: str, err: OSError) -> StorageError:
    """A `StorageError` for a failed file-system call, with what to check (`DiskFull` when the
    file system is out of space, quota or file size, whatever the call was)."""
    if err.errno in _FULL:
        what, fix = _FULL[err.errno]
        return DiskFull(f"{what} writing {path}; {fix}", uri=path, reason=what)
    reason = err.strerror or type(err).__name__
    hint = {
        errno.EACCES: "; check the permissions of the folder",
        errno.EROFS: "; the file system is read-only",
        errno.EISDIR: "; a folder has that name",
        errno.ENOTDIR: "; a file stands where a folder is needed",
    }.get(err.errno or 0, "")
    return StorageError(f"could not {action} {path!r}: {reason}{hint}", uri=path)


def fsync_dir(folder: str) -> None:
    """Make renames and links inside ``folder`` durable (no-op where the file system can't)."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as err:
        raise _os_error("open folder", folder, err) from err
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise _os_error("fsync folder", folder, err) from err
        logger.debug("fsync of folder %r is not supported here (%s)", folder, err.strerror)
    finally:
        os.close(fd)


def make_dirs(folder: str) -> None:
    """Create ``folder`` and missing parents, fsyncing each parent so the new names persist."""
    missing: list[str] = []
    current = os.path.abspath(folder)
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not os.path.isdir(path):
                raise _os_error(
                    "create folder", path, NotADirectoryError(errno.ENOTDIR, "Not a directory")
                ) from None
            continue
        except OSError as err:
            raise _os_error("create folder", path, err) from err
        fsync_dir(os.path.dirname(path))


def _unlink_quietly(path: str) -> None:
    """Remove a temp file; a failure is logged, not raised (the original error matters more)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.warning("could not remove temp file %r: %s", path, err.strerror)


def _commit(temp: str, dest: str, *, exclusive: bool) -> bool:
    """Give the finished temp file its final name; False if ``exclusive`` and ``dest`` exists."""
    if not exclusive:
        try:
            os.replace(temp, dest)
        except OSError as err:
            raise _os_error("replace", dest, err) from err
        return True
    try:
        os.link(temp, dest)
    except FileExistsError:
        return False
    except OSError as err:
        if err.errno in _NO_HARD_LINKS:
            raise StorageError(
                f"could not create {dest!r} exclusively: the file system does not support hard "
                f"links ({err.strerror}); put the output root on a local POSIX file system",
                uri=dest,
            ) from err
        raise _os_error("create", dest, err) from err
    return True


def write_atomically(
    dest: str, fill: Callable[[BinaryIO], T], *, exclusive: bool = False
) -> tuple[bool, T]:
    """Write ``dest`` through a temp file that ``fill`` writes into; all or nothing.

    Returns ``(committed, fill's result)``; ``committed`` is False only when ``exclusive`` and
    ``dest`` already existed. Whatever ``fill`` raises propagates after the temp file is removed.
    """
    folder = os.path.dirname(dest) or "."
    make_dirs(folder)
    temp = _temp_path(dest)
    try:
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666
        )
    except OSError as err:
        raise _os_error("create a temp file for", dest, err) from err
    try:
        handle = os.fdopen(fd, "wb")
        try:
            result = fill(handle)
            _flush_and_sync(handle, dest)
        except BaseException:
            _close_quietly(handle)  # its unwritten bytes go with the temp file
            raise
        _close(handle, dest)
        committed = _commit(temp, dest, exclusive=exclusive)
    except BaseException:
        _unlink_quietly(temp)
        raise
    if exclusive:
        _unlink_quietly(temp)
    fsync_dir(folder)
    return committed, result


def _close(handle: BinaryIO, dest: str) -> None:
    """Close a temp file whose data is flushed; a failure is a `StorageError` about ``dest``."""
    try:
        handle.close()
    except OSError as err:
        raise _os_error("write", dest, err) from err


def _close_quietly(handle: BinaryIO) -> None:
    """Close a temp file that is being abandoned: flushing its buffer may fail again (a full
    disk), which must not hide the error that made us abandon it."""
    try:
        handle.close()
    except OSError as err:
        logger.debug("closing an abandoned temp file failed: %s", err)


def _flush_and_sync(handle: BinaryIO, dest: str) -> None:
    try:
        handle.flush()
        os.fsync(handle.fileno())
    except OSError as err:
        raise _os_error("write", dest, err) from err


class LocalBackend:
    """`pipeline.storage.Storage` operations on local paths."""

    def fingerprint(self, uri: str) -> str:
        path = _local_path(uri)
        info = self._stat_file(uri)
        size = info.st_size
        digest = hashlib.sha256()
        try:
            with open(
                path, "rb"
            ) as handle:  # the first and last 64 KiB catch edits that keep the size
                digest.update(handle.read(65536))
                if size > 65536:
                    handle.seek(max(65536, size - 65536))
                    digest.update(handle.read(65536))
        except OSError as err:
            raise _os_error("read", path, err) from err
        return f"file:{size}:{info.st_mtime_ns}:{digest.hexdigest()[:16]}"

    def exists(self, uri: str) -> bool:
        return os.path.isfile(_local_path(uri))

    def size(self, uri: str) -> int:
        return self._stat_file(uri).st_size

    @staticmethod
    def _stat_file(uri: str) -> os.stat_result:
        """The file's stat; `NotFound`, or `StorageError` when it is not a regular file."""
        path = _local_path(uri)
        try:
            info = os.stat(path)
        except FileNotFoundError as err:
            raise NotFound(f"{path!r} not found", uri=uri) from err
        except OSError as err:
            raise _os_error("stat", path, err) from err
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{path!r} is not a regular file", uri=uri)
        return info

    def open(self, uri: str) -> io.BufferedReader:
        path = _local_path(uri)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns the handle
        except FileNotFoundError as err:
            raise NotFound(f"{path!r} not found", uri=uri) from err
        except OSError as err:
            raise _os_error("open", path, err) from err

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as handle:
            try:
                return handle.read()
            except OSError as err:
                raise _os_error("read", _local_path(uri), err) from err

    def list(self, prefix_uri: str) -> list[tuple[str, int]]:
        root = _local_path(prefix_uri)
        if not os.path.isdir(root):
            return []
        found: list[tuple[str, int]] = []
        for folder, _subfolders, names in os.walk(root):
            for name in names:
                if is_temp_name(name):
                    continue
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue  # deleted while we walked
                if stat.S_ISREG(info.st_mode):
                    found.append((path, info.st_size))
        return sorted(found)

    def delete(self, uri: str) -> None:
        path = _local_path(uri)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as err:
            raise _os_error("delete", path, err) from err
        fsync_dir(os.path.dirname(path) or ".")

    def put(self, source: Source, uri: str) -> PutResult:
        dest = _local_path(uri)

        def fill(handle: BinaryIO) -> tuple[int, str]:
            digest = hashlib.sha256()
            size = 0
            for chunk in _iter_source(source):
                try:
                    handle.write(chunk)
                except OSError as err:
                    raise _os_error("write", dest, err) from err
                digest.update(chunk)
                size += len(chunk)
            return size, digest.hexdigest()

        _, (size, sha256) = write_atomically(dest, fill)
        logger.debug("wrote %s (%d bytes)", dest, size)
        return PutResult(uri=dest, size=size, sha256=sha256)

    def put_if_absent(self, data: bytes, uri: str) -> bool:
        dest = _local_path(uri)
        created, _ = write_atomically(dest, lambda handle: handle.write(data), exclusive=True)
        logger.debug("put_if_absent %s: %s", dest, "created" if created else "already exists")
        return created

    def download(self, uri: str, local_path: str) -> None:
        source = _local_path(uri)
        if not os.path.isfile(source):
            raise NotFound(f"{source!r} not found", uri=uri)
        self.put(source, local_path)
