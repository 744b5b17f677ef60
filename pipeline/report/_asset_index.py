"""``report/assets.json``: what each of the page's images was made from, so that rebuilding the
page of an unchanged job decodes no video."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..storage import Storage, StorageError, join
from ._summary import load_json

logger = logging.getLogger(__package__)

#: Folder (inside the job folder) holding the page's JPEG images.
ASSETS_FOLDER = "report"
#: The index of those images (inside `ASSETS_FOLDER`): what each was made from.
ASSETS_INDEX = "assets.json"
#: Bumped when the images or the index change shape: older indexes are then ignored.
ASSETS_VERSION = 1


class AssetIndex:
    """``report/assets.json``: per image set (a row's poster and sheet, its portrait thumbnail)
    the source it was made from, that source's `Storage.fingerprint` (size, mtime and a hash of
    its ends; ETag on S3) and what was learnt decoding it. An entry whose source, fingerprint and
    parameters match and whose files all exist is reused: nothing is decoded again."""

    def __init__(self, job_folder_uri: str, storage: Storage) -> None:
        self.folder = join(job_folder_uri, ASSETS_FOLDER)
        self.storage = storage
        self.uri = join(self.folder, ASSETS_INDEX)
        loaded = load_json(self.uri, storage) or {}
        version_ok = loaded.get("version") == ASSETS_VERSION
        self.entries: dict[str, Any] = dict(loaded.get("entries") or {}) if version_ok else {}
        self.used: dict[str, Any] = {}
        # what this build made, by source: rows sharing a source share its pictures (their
        # entries stay with the first row, so a later change of that row redoes them)
        self.made: dict[Any, Any] = {}
        self._files: set[str] | None = None  # names under report/, listed on first need

    def _existing(self) -> set[str]:
        if self._files is None:
            try:
                listed = self.storage.list(self.folder)
            except StorageError as err:
                logger.debug("report: cannot list %s: %s", self.folder, err)
                listed = []
            prefix = self.folder.rstrip("/") + "/"
            self._files = {uri[len(prefix) :] for uri, _ in listed if uri.startswith(prefix)}
        return self._files

    def lookup(
        self, key: str, source: str, fingerprint: str | None, params: object = None
    ) -> dict[str, Any] | None:
        """The cached entry for `key` if it was made from this very source, else None."""
        entry = self.entries.get(key)
        if fingerprint is None or not isinstance(entry, dict):
            return None
        same = (
            entry.get("source") == source
            and entry.get("fingerprint") == fingerprint
            and entry.get("params") == _plain(params)
        )
        if not same or not set(entry.get("files") or ()) <= self._existing():
            return None
        self.used[key] = entry
        return entry

    def store(
        self,
        key: str,
        source: str,
        fingerprint: str | None,
        files: dict[str, bytes],
        data: dict[str, Any],
        params: object = None,
    ) -> None:
        """Write `files` under report/ and remember them (when the source has a fingerprint)."""
        for name, content in files.items():
            self.storage.put(content, join(self.folder, name))
            self._existing().add(name)
        if fingerprint is None:
            return
        self.used[key] = {
            "source": source,
            "fingerprint": fingerprint,
            "params": _plain(params),
            "files": sorted(files),
            "data": data,
        }

    def save(self) -> None:
        """Write the index when it changed (a no-op rebuild writes nothing here)."""
        if self.used == self.entries:
            return
        document = {"version": ASSETS_VERSION, "entries": self.used}
        try:
            self.storage.put(json.dumps(document, indent=1, sort_keys=True).encode(), self.uri)
        except StorageError as err:  # the cache is a convenience: the page is complete without it
            logger.warning("report: could not write %s: %s", self.uri, err)


def _plain(value: object) -> object:
    """`value` as JSON would give it back (tuples as lists), for comparing with a loaded entry."""
    return json.loads(json.dumps(value))


def source_fingerprint(uri: str, storage: Storage) -> str | None:
    """`Storage.fingerprint` of an image's source (None when it has none: the image is remade)."""
    try:
        return storage.fingerprint(uri)
    except (StorageError, OSError) as err:
        logger.debug("report: no fingerprint of %s: %s", uri, err)
        return None
