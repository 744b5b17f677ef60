"""Where a row's files are, seen from the page: its output as it is now, its inputs' links (or
why the page cannot reach them), and the file-name-safe stem of its images."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..storage import Storage, StorageError, join, relative_path, remote_scheme
from ._values import as_mapping

logger = logging.getLogger(__package__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


@dataclass(frozen=True)
class InputView:
    """A row's portrait or driving clip as the page shows it."""

    src: str | None = None  # the input itself, relative to the page (None: not reachable)
    thumb: str | None = None  # the portrait's thumbnail under report/
    framed: bool = False  # the thumbnail has the face and square drawn on it
    note: str | None = None  # why it is not shown


def asset_stem(row_id: str) -> str:
    """A file-name-safe stem for a row's images: the id itself when safe, else slug + hash."""
    if _SAFE_NAME.fullmatch(row_id):
        return row_id
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", row_id).strip("._-")[:40] or "row"
    digest = hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def row_inputs(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return as_mapping(row.get("inputs"))


def output_uri(output: str, job_folder_uri: str, storage: Storage) -> str | None:
    """Where the row's output is now: as recorded, else by its name in the job folder."""
    candidates = [output]
    name = posixpath.basename(output.replace("\\", "/"))
    if name and name not in (".", ".."):
        try:
            candidates.append(join(job_folder_uri, name))
        except StorageError:
            pass
    for uri in candidates:
        try:
            if storage.exists(uri):
                return uri
        except StorageError as err:
            logger.debug("report: cannot check %s: %s", uri, err)
    return None


def relative_url(target_uri: str, job_folder_uri: str, storage: Storage) -> str | None:
    """The URL of `target_uri` relative to the job folder (None: not reachable from the page)."""
    relative = relative_path(target_uri, job_folder_uri)
    return None if relative is None else urllib.parse.quote(relative, safe="/")


class InputLinks:
    """Links to a job's inputs, checked once per URI (many rows share a driving clip)."""

    def __init__(self, job_folder_uri: str, storage: Storage) -> None:
        self.folder = job_folder_uri
        self.storage = storage
        self._seen: dict[str, InputView] = {}

    def link(self, uri: object, what: str) -> InputView:
        """The input's link, or a note saying why the page cannot reach it."""
        if not isinstance(uri, str) or not uri:
            return InputView()
        if uri not in self._seen:
            self._seen[uri] = self._check(uri, what)
        return self._seen[uri]

    def _check(self, uri: str, what: str) -> InputView:
        try:
            src = relative_url(uri, self.folder, self.storage)
        except (StorageError, ValueError) as err:
            return InputView(note=f"the {what} {uri} cannot be linked: {err}")
        if src is None:
            scheme = remote_scheme(uri)
            where = f"on {scheme.title}" if scheme else "on this machine"
            return InputView(
                note=f"the {what} is {where} ({uri}), out of this page's reach: open it there"
            )
        try:
            if not self.storage.exists(uri):
                return InputView(note=f"the {what} {uri} does not exist any more")
        except StorageError as err:
            return InputView(src=src, note=f"could not check the {what} {uri}: {err}")
        return InputView(src=src)
