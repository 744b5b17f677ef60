"""The one atomic-write helper: a local file is written whole or not at all.

A write goes to ``.<name>.<random>.partial`` in the destination's folder (same file system, so the
rename is atomic), is flushed and fsynced, then ``os.replace``d onto the final name (or, with
``exclusive``, hard-linked to it, which fails if the name exists), and finally the folder is
fsynced so the new name survives a power cut. If the writer fails, the temp file is removed; if it
is killed, only a ``.partial`` file is left, which listings skip (`is_temp_name`).

Used by the local backend for every write and by the remote backends for downloads.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
from collections.abc import Callable
from typing import BinaryIO, TypeVar

from ._errors import DiskFull, StorageError

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


def os_error(action: str, path: str, err: OSError) -> StorageError:
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
        raise os_error("open folder", folder, err) from err
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise os_error("fsync folder", folder, err) from err
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
                raise os_error(
                    "create folder", path, NotADirectoryError(errno.ENOTDIR, "Not a directory")
                ) from None
            continue
        except OSError as err:
            raise os_error("create folder", path, err) from err
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
            raise os_error("replace", dest, err) from err
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
        raise os_error("create", dest, err) from err
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
        raise os_error("create a temp file for", dest, err) from err
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
        raise os_error("write", dest, err) from err


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
        raise os_error("write", dest, err) from err
