"""The job's durable state, kept on the output storage itself: what is committed, what can resume.

Layout under the job folder (``<output_root>/<job>/``)::

    <stem>-<hash>.mp4                      the row's video; written only after its commit marker
    _rows/<stem>-<hash>/commit.json        commit marker, created with If-None-Match (exactly once)
    _rows/<stem>-<hash>/video.<attempt>.mp4   the committed upload (the public file is its copy)
    _rows/<stem>-<hash>/segments/NNNNNN.mp4    encoded segment N (resume points inside a row)
    _rows/<stem>-<hash>/segments/NNNNNN.state  animator state after segment N
    _rows/<stem>-<hash>/segments/NNNNNN.json   segment marker (written last, If-None-Match)

``<hash>`` covers the row's inputs (their content fingerprints) and every setting that changes the
pixels, so a rerun of the same job finds committed rows (skipped), resumes unfinished ones from
their last committed segment, and redoes rows whose inputs or settings changed (new hash). Every
marker is written last and conditionally: a retried or duplicated worker can never commit a
segment or a row twice, and a reader trusts only what a marker vouches for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .storage import NotFound, Storage, join

logger = logging.getLogger(__name__)

ROWS_DIR = "_rows"
SEGMENTS_DIR = "segments"
COMMIT_MARKER = "commit.json"
MARKER_VERSION = 1


def content_hash(document: Any, length: int = 10) -> str:
    """Short, stable hash of a JSON-serialisable document (keys sorted)."""
    data = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:length]


@dataclass(frozen=True)
class SegmentRecord:
    """A committed segment: output frames ``[start_frame, end_frame)`` and its files."""

    index: int
    start_frame: int
    end_frame: int
    video_uri: str
    video_size: int
    video_sha256: str
    state_uri: str
    state_size: int
    state_sha256: str

    @classmethod
    def from_marker(cls, marker: dict[str, Any]) -> SegmentRecord:
        return cls(**{k: marker[k] for k in cls.__dataclass_fields__})


@dataclass
class RowLedger:
    """What storage says about one row key."""

    key: str
    commit: dict[str, Any] | None = None
    segments: list[SegmentRecord] = field(default_factory=list)

    @property
    def state(self) -> str:
        """ "committed", "partial" (segments to resume from) or "new"."""
        if self.commit is not None:
            return "committed"
        return "partial" if self.segments else "new"

    @property
    def frames_committed(self) -> int:
        return self.segments[-1].end_frame if self.segments else 0


class Ledger:
    """Read and write the durable state of one job folder.

    Args:
        storage: the output storage.
        job_uri: ``<output_root>/<job name>``.
    """

    def __init__(self, storage: Storage, job_uri: str) -> None:
        self.storage = storage
        self.job_uri = job_uri

    # ---------------------------------------------------------------- naming

    @staticmethod
    def row_key(stem: str, fingerprint: dict[str, Any]) -> str:
        """``<stem>-<hash>``: deterministic for the same inputs and pixel-changing settings."""
        return f"{stem}-{content_hash(fingerprint)}"

    def row_uri(self, key: str) -> str:
        return join(self.job_uri, ROWS_DIR, key)

    def public_uri(self, key: str) -> str:
        return join(self.job_uri, f"{key}.mp4")

    def segment_uri(self, key: str, index: int, suffix: str) -> str:
        return join(self.row_uri(key), SEGMENTS_DIR, f"{index:06d}.{suffix}")

    # ---------------------------------------------------------------- reading

    def row(self, key: str) -> RowLedger:
        """Committed marker and the valid prefix of committed segments of ``key``."""
        ledger = RowLedger(key, commit=self.commit_marker(key))
        if ledger.commit is None:
            ledger.segments = self._segments(key)
        return ledger

    def commit_marker(self, key: str) -> dict[str, Any] | None:
        """The commit marker of ``key``, or None when it is not committed (its segments are
        not listed: `row` does that)."""
        try:
            return json.loads(self.storage.read_bytes(join(self.row_uri(key), COMMIT_MARKER)))
        except NotFound:
            return None

    def _segments(self, key: str) -> list[SegmentRecord]:
        """Segments 0..k whose markers exist and whose files have the recorded sizes."""
        objects = dict(self.storage.list(join(self.row_uri(key), SEGMENTS_DIR)))
        segments: list[SegmentRecord] = []
        index = 0
        expected_start = 0
        while True:
            marker_uri = self.segment_uri(key, index, "json")
            if marker_uri not in objects:
                break
            try:
                record = SegmentRecord.from_marker(json.loads(self.storage.read_bytes(marker_uri)))
            except (NotFound, ValueError, KeyError, TypeError) as err:
                logger.warning(
                    "%s: unreadable segment marker (%s); resuming before it", marker_uri, err
                )
                break
            if (
                record.start_frame != expected_start
                or objects.get(record.video_uri) != record.video_size
                or objects.get(record.state_uri) != record.state_size
            ):
                logger.warning(
                    "%s: segment files missing or changed; resuming before it", marker_uri
                )
                break
            segments.append(record)
            expected_start = record.end_frame
            index += 1
        return segments

    def verify_commit(self, commit: dict[str, Any]) -> bool:
        """Whether the public video a commit marker vouches for is there with the recorded size."""
        try:
            return self.storage.size(commit["video"]) == commit["video_size"]
        except NotFound:
            return False

    # ---------------------------------------------------------------- writing

    def commit_segment(
        self,
        key: str,
        index: int,
        start_frame: int,
        end_frame: int,
        video_path: str,
        state: bytes,
        extra: dict[str, Any] | None = None,
    ) -> SegmentRecord:
        """Upload segment ``index`` and its animator state, then its marker (conditionally).

        If the marker already exists (a duplicate worker got there first), the existing record
        is returned: the same inputs and seed give the same segment.
        """
        video = self.storage.put(video_path, self.segment_uri(key, index, "mp4"))
        saved = self.storage.put(state, self.segment_uri(key, index, "state"))
        record = SegmentRecord(
            index,
            start_frame,
            end_frame,
            video.uri,
            video.size,
            video.sha256,
            saved.uri,
            saved.size,
            saved.sha256,
        )
        marker = {
            "version": MARKER_VERSION,
            **record.__dict__,
            **(extra or {}),
            "written_at": _now(),
        }
        marker_uri = self.segment_uri(key, index, "json")
        if not self.storage.put_if_absent(json.dumps(marker, indent=1).encode(), marker_uri):
            logger.info("%s: segment %d was already committed by another attempt", key, index)
            return SegmentRecord.from_marker(json.loads(self.storage.read_bytes(marker_uri)))
        return record

    def read_state(self, record: SegmentRecord) -> bytes:
        data = self.storage.read_bytes(record.state_uri)
        if hashlib.sha256(data).hexdigest() != record.state_sha256:
            raise ValueError(f"{record.state_uri}: checksum differs from its segment marker")
        return data

    def commit_row(
        self, key: str, video_path: str, meta: dict[str, Any], *, public: bool = True
    ) -> tuple[bool, dict[str, Any]]:
        """Upload the finished video and create the row's commit marker, exactly once.

        The video is uploaded under an attempt-unique name, the marker is created with
        If-None-Match; only the winner then copies the video to its public name. Returns
        ``(won, marker)``; a loser gets the winner's marker and removes its own upload.
        ``public=False`` (a part of a split row): the upload itself is the committed video.
        """
        attempt = secrets.token_hex(4)
        upload = self.storage.put(video_path, join(self.row_uri(key), f"video.{attempt}.mp4"))
        marker = {
            "version": MARKER_VERSION,
            "row_key": key,
            "video": self.public_uri(key) if public else upload.uri,
            "video_source": upload.uri,
            "video_size": upload.size,
            "video_sha256": upload.sha256,
            "committed_at": _now(),
            **meta,
        }
        marker_uri = join(self.row_uri(key), COMMIT_MARKER)
        if not self.storage.put_if_absent(json.dumps(marker, indent=1).encode(), marker_uri):
            self.storage.delete(upload.uri)
            existing = json.loads(self.storage.read_bytes(marker_uri))
            logger.info("%s: already committed by another attempt; keeping that one", key)
            return False, existing
        if public:
            self.storage.put(video_path, marker["video"])
        self.tidy(key, marker)
        return True, marker

    def repair_public(self, commit: dict[str, Any], scratch_path: str) -> None:
        """Re-copy a committed video to its public name (a crash between marker and copy)."""
        self.storage.download(commit["video_source"], scratch_path)
        self.storage.put(scratch_path, commit["video"])
        logger.info("restored %s from its committed upload", commit["video"])

    def tidy(self, key: str, commit: dict[str, Any]) -> None:
        """Remove what a committed row no longer needs: its segments and any upload of an
        attempt that did not win (left by a worker killed between upload and marker)."""
        keep = {commit["video_source"], join(self.row_uri(key), COMMIT_MARKER)}
        for uri, _ in self.storage.list(self.row_uri(key)):
            if uri not in keep:
                self.storage.delete(uri)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
