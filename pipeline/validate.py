"""Check every row of a manifest before any model work: structure, files, and media contents.

:func:`validate_manifest` returns the rows that can be rendered, with what probing found
(frames, rate, audio), plus every problem of every row — each naming row, column, value and fix.
Only :mod:`pipeline.manifest` (the CSV) and :mod:`pipeline.media` (probing) are used: no GPU, no
model.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from .manifest import Manifest, ManifestError, ManifestProblem, ManifestRow, check_manifest
from .media import MediaError, load_image, probe
from .storage import NotFound, Storage, StorageError, is_s3

logger = logging.getLogger(__name__)

MIN_PORTRAIT_SIDE = 64  # below this a face cannot be animated meaningfully


@dataclass(frozen=True)
class RowMedia:
    """What probing a valid row found (used for the work estimate and progress totals)."""

    row: ManifestRow
    frames: int  # frames that will be rendered (after max_frames)
    frame_rate: Fraction
    duration_seconds: float
    has_audio: bool  # from the audio file, else the driving video
    portrait_size: tuple[int, int]


@dataclass(frozen=True)
class Validation:
    """Outcome of :func:`validate_manifest`.

    Attributes:
        manifest: the parsed manifest (the rows that passed the CSV checks), or None when the file
            itself could not be read as a manifest.
        ready: the rows with no problem at all, with their media facts.
        problems: every problem found, in manifest order.
    """

    manifest: Manifest | None
    ready: list[RowMedia]
    problems: list[ManifestProblem]

    @property
    def structural(self) -> bool:
        """True when the manifest as a whole is unusable: a problem not tied to any row."""
        return self.manifest is None or any(p.row is None for p in self.problems)

    def failed_rows(self) -> dict[str, list[ManifestProblem]]:
        """Problems per row: keyed by the row id when the row parsed, else ``row <n>``."""
        by_line = {row.line: row.id for row in (self.manifest.rows if self.manifest else ())}
        failed: dict[str, list[ManifestProblem]] = {}
        for problem in self.problems:
            if problem.row is None:
                continue
            label = by_line.get(problem.line) or f"row {problem.row}"
            failed.setdefault(label, []).append(problem)
        return failed


def validate_manifest(
    uri: str,
    storage: Storage,
    *,
    max_frames: int | None = None,
    allowed_input_roots: list[str] | tuple[str, ...] = (),
    workers: int = 8,
) -> Validation:
    """Parse ``uri`` and probe every row's portrait, driving video and audio.

    Args:
        uri: manifest path or ``s3://`` URI.
        storage: reads S3 inputs.
        max_frames: the job's default frame cap (a row's own ``max_frames`` wins).
        allowed_input_roots: local inputs must lie under one of these (when given).
        workers: rows probed in parallel (probing is I/O bound).
    """
    try:
        manifest, problems = check_manifest(
            uri,
            read_bytes=storage.read_bytes if is_s3(uri) else None,
            exists=storage.exists,
            allowed_input_roots=allowed_input_roots,
        )
    except (NotFound, StorageError) as err:
        return Validation(
            None, [], [ManifestProblem(None, None, uri, str(err), "check the manifest path or URI")]
        )
    except ManifestError as err:
        return Validation(None, [], list(err.problems))
    problems = list(problems)
    bad_lines = {p.line for p in problems if p.line is not None}
    candidates = [row for row in manifest.rows if row.line not in bad_lines]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda row: _probe_row(row, storage, max_frames), candidates))
    ready = []
    for media, row_problems in results:
        problems.extend(row_problems)
        if media is not None and not row_problems:
            ready.append(media)
    problems.sort(key=lambda p: p.line if p.line is not None else -1)
    return Validation(manifest, ready, problems)


def _open(storage: Storage, uri: str) -> Any:
    local = storage.local_path(uri)
    return nullcontext(local) if local is not None else storage.open(uri)


def _probe_row(
    row: ManifestRow, storage: Storage, default_max: int | None
) -> tuple[RowMedia | None, list[ManifestProblem]]:
    problems: list[ManifestProblem] = []

    def problem(column: str, value: str, message: str, fix: str) -> None:
        problems.append(ManifestProblem.for_row(row, column, value, message, fix))

    portrait_size = (0, 0)
    try:
        with _open(storage, row.portrait) as source:
            image = load_image(source)
        portrait_size = (image.shape[1], image.shape[0])
        if min(portrait_size) < MIN_PORTRAIT_SIDE:
            problem(
                "portrait",
                row.portrait,
                f"portrait is only {portrait_size[0]}x{portrait_size[1]} pixels",
                f"use a portrait at least {MIN_PORTRAIT_SIDE}x{MIN_PORTRAIT_SIDE} (512x512 or more is best)",
            )
    except (MediaError, StorageError) as err:
        problem("portrait", row.portrait, str(err), "give a readable PNG/JPEG/WebP portrait")
    video = None
    try:
        with _open(storage, row.driving_video) as source:
            info = probe(source)
        video = info.video
        if video is None:
            problem(
                "driving_video",
                row.driving_video,
                "no video stream found",
                "give an MP4/MOV/MKV/WebM video",
            )
    except (MediaError, StorageError) as err:
        problem(
            "driving_video", row.driving_video, str(err), "give a readable MP4/MOV/MKV/WebM video"
        )
    has_audio = False
    if row.audio:
        try:
            with _open(storage, row.audio) as source:
                audio_info = probe(source)
            has_audio = audio_info.audio is not None
            if not has_audio:
                problem(
                    "audio",
                    row.audio,
                    "no audio stream found",
                    "give a WAV/MP3/AAC/M4A/FLAC/Ogg file, or leave the cell empty",
                )
        except (MediaError, StorageError) as err:
            problem(
                "audio", row.audio, str(err), "give a readable audio file, or leave the cell empty"
            )
    elif video is not None:
        has_audio = info.audio is not None
    if video is None or problems:
        return None, problems
    cap = row.max_frames if row.max_frames is not None else default_max
    frames = video.num_frames if cap is None else min(cap, video.num_frames)
    return (
        RowMedia(
            row=row,
            frames=frames,
            frame_rate=video.frame_rate,
            duration_seconds=float(frames / video.frame_rate),
            has_audio=has_audio,
            portrait_size=portrait_size,
        ),
        problems,
    )
