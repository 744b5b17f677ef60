"""Local-disk backend of `pipeline.storage`: files under a path, written atomically.

Every write goes through `pipeline.storage._atomic.write_atomically` (temp file, fsync, rename or
link, fsync of the folder); listings skip the temp files of writes in flight.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from typing import Any, BinaryIO

from . import _uri
from ._atomic import fsync_dir, is_temp_name, os_error, write_atomically
from ._backend import PutResult, Source, iter_source
from ._errors import NotFound, StorageError

logger = logging.getLogger(__name__)


def create(cfg: Any, options: dict[str, Any]) -> LocalBackend:
    """The backend `Storage` uses for local paths (it needs no settings)."""
    return LocalBackend()


class LocalBackend:
    """`pipeline.storage.Storage` operations on local paths."""

    def fingerprint(self, uri: str) -> str:
        path = _uri.local_path(uri)
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
            raise os_error("read", path, err) from err
        return f"file:{size}:{info.st_mtime_ns}:{digest.hexdigest()[:16]}"

    def exists(self, uri: str) -> bool:
        return os.path.isfile(_uri.local_path(uri))

    def size(self, uri: str) -> int:
        return self._stat_file(uri).st_size

    @staticmethod
    def _stat_file(uri: str) -> os.stat_result:
        """The file's stat; `NotFound`, or `StorageError` when it is not a regular file."""
        path = _uri.local_path(uri)
        try:
            info = os.stat(path)
        except FileNotFoundError as err:
            raise NotFound(f"{path!r} not found", uri=uri) from err
        except OSError as err:
            raise os_error("stat", path, err) from err
        if not stat.S_ISREG(info.st_mode):
            raise StorageError(f"{path!r} is not a regular file", uri=uri)
        return info

    def open(self, uri: str) -> io.BufferedReader:
        path = _uri.local_path(uri)
        try:
            return open(path, "rb")  # noqa: SIM115 - the caller owns the handle
        except FileNotFoundError as err:
            raise NotFound(f"{path!r} not found", uri=uri) from err
        except OSError as err:
            raise os_error("open", path, err) from err

    def read_bytes(self, uri: str) -> bytes:
        with self.open(uri) as handle:
            try:
                return handle.read()
            except OSError as err:
                raise os_error("read", _uri.local_path(uri), err) from err

    def list(self, prefix_uri: str) -> list[tuple[str, int]]:
        root = _uri.local_path(prefix_uri)
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
        path = _uri.local_path(uri)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as err:
            raise os_error("delete", path, err) from err
        fsync_dir(os.path.dirname(path) or ".")

    def put(self, source: Source, uri: str) -> PutResult:
        dest = _uri.local_path(uri)

        def fill(handle: BinaryIO) -> tuple[int, str]:
            digest = hashlib.sha256()
            size = 0
            for chunk in iter_source(source):
                try:
                    handle.write(chunk)
                except OSError as err:
                    raise os_error("write", dest, err) from err
                digest.update(chunk)
                size += len(chunk)
            return size, digest.hexdigest()

        _, (size, sha256) = write_atomically(dest, fill)
        logger.debug("wrote %s (%d bytes)", dest, size)
        return PutResult(uri=dest, size=size, sha256=sha256)

    def put_if_absent(self, data: bytes, uri: str) -> bool:
        dest = _uri.local_path(uri)
        created, _ = write_atomically(dest, lambda handle: handle.write(data), exclusive=True)
        logger.debug("put_if_absent %s: %s", dest, "created" if created else "already exists")
        return created

    def download(self, uri: str, local_path: str) -> None:
        source = _uri.local_path(uri)
        if not os.path.isfile(source):
            raise NotFound(f"{source!r} not found", uri=uri)
        self.put(source, local_path)
