"""Check every row of a manifest before any model work: structure, files, and media contents.

:func:`validate_manifest` returns the rows that can be rendered, with what probing found
(frames, rate, audio, what will be converted), plus every problem of every row — each naming row,
column, value, what is wrong and the fix. Only :mod:`pipeline.manifest` (the CSV) and
:mod:`pipeline.media` (probing) are used, plus PIL to read image headers: no GPU, no model.

Each distinct input file is checked once per column (a manifest of 500 rows that share a few
files probes a few files), in parallel threads. A check reads headers and the first video frame
only: never a whole video.

Which inputs are rejected and which are accepted (and converted) is listed, with the exact
messages, in ``docs/reliability.md``. In short: unreadable, truncated, empty or wrong-kind files
are problems; odd image modes (CMYK, grayscale, 16-bit, palette, transparency), EXIF orientation,
variable frame rate, rotation metadata, odd sizes, HEVC/VP9 and any audio layout or sample rate
are accepted, and what will be converted is recorded in :attr:`RowMedia.notes`.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import IO, Any, Literal

from PIL import Image, UnidentifiedImageError

from .config import FramingConfig
from .framing import FaceDetector, no_face_message
from .manifest import Manifest, ManifestError, ManifestProblem, ManifestRow, check_manifest
from .media import (
    TRANSPARENT_MODES,
    AudioStreamInfo,
    MediaError,
    MediaInfo,
    MediaSource,
    VideoStreamInfo,
    load_image,
    probe,
    source_name,
)
from .storage import NotFound, Storage, StorageError, is_remote

logger = logging.getLogger(__name__)

MIN_PORTRAIT_SIDE = 64  # below this a face cannot be animated meaningfully
MAX_PORTRAIT_PIXELS = 80_000_000  # larger images are refused unread (decompression-bomb guard)

PORTRAIT_FIX = "give a PNG, JPEG or WebP photo of a face"
VIDEO_FIX = "give an MP4/MOV/MKV/WebM video of a face"
AUDIO_FIX = (
    "give a WAV/MP3/AAC/M4A/FLAC/Ogg file, or leave the cell empty to use the driving video's "
    "own sound"
)
INTERNAL_FIX = "report this with the file attached; the other rows are not affected"

Column = Literal["portrait", "driving_video", "audio"]
_NOUNS: dict[str, str] = {
    "portrait": "portrait",
    "driving_video": "driving video",
    "audio": "audio file",
}
_FIXES: dict[str, str] = {
    "portrait": PORTRAIT_FIX,
    "driving_video": VIDEO_FIX,
    "audio": AUDIO_FIX,
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class RowMedia:
    """What probing a valid row found (used for the work estimate and progress totals).

    Attributes:
        row: the manifest row.
        frames: frames that will be rendered (after max_frames).
        frame_rate: exact output frame rate (a variable-rate video's average rate).
        duration_seconds: duration of the rendered clip (``frames / frame_rate``).
        has_audio: the output gets sound (from the audio file, else the driving video).
        portrait_size: (width, height) of the upright portrait.
        face: the face framing will animate, ``(x, y, width, height)`` in the upright
            portrait's pixels (None: framing.portrait is not "face").
        notes: what will be converted on the way, e.g.
            ``"portrait: CMYK image converted to 8-bit RGB"`` (empty when nothing is).
    """

    row: ManifestRow
    frames: int
    frame_rate: Fraction
    duration_seconds: float
    has_audio: bool
    portrait_size: tuple[int, int]
    notes: tuple[str, ...] = ()
    face: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class Validation:
    """Outcome of :func:`validate_manifest`.

    Attributes:
        manifest: the parsed manifest (the rows that passed the CSV checks), or None when the file
            itself could not be read as a manifest.
        ready: the rows with no problem at all, with their media facts.
        problems: every problem found, in manifest order.
        settled: rows the caller's ``settled`` check took out before probing (e.g. rows whose
            output an earlier run already committed): their files were not opened.
    """

    manifest: Manifest | None
    ready: list[RowMedia]
    problems: list[ManifestProblem]
    settled: list[ManifestRow] = field(default_factory=list)  # rows `settled` said need no probe

    @property
    def structural(self) -> bool:
        """True when the manifest as a whole is unusable: a problem not tied to any row."""
        return self.manifest is None or any(p.row is None for p in self.problems)

    def failed_rows(self) -> dict[str, list[ManifestProblem]]:
        """Problems per row: keyed by the row's id (given or derived; ``row <n>`` only for a row
        whose own id cell is unusable)."""
        failed: dict[str, list[ManifestProblem]] = {}
        for problem in self.problems:
            if problem.row is None:
                continue
            label = problem.row_id or f"row {problem.row}"
            failed.setdefault(label, []).append(problem)
        return failed


def validate_manifest(
    uri: str,
    storage: Storage,
    *,
    max_frames: int | None = None,
    allowed_input_roots: list[str] | tuple[str, ...] = (),
    workers: int = 8,
    max_portrait_pixels: int = MAX_PORTRAIT_PIXELS,
    framing: FramingConfig | None = None,
    strict: bool = False,
    settled: Callable[[ManifestRow], bool] | None = None,
) -> Validation:
    """Parse ``uri`` and check every row's portrait, driving video and audio.

    Args:
        uri: manifest path or ``s3://`` URI.
        storage: reads S3 inputs.
        max_frames: the job's default frame cap (a row's own ``max_frames`` wins). A longer
            video is not a problem: its first frames are rendered.
        allowed_input_roots: local inputs must lie under one of these (when given).
        workers: files probed in parallel (probing is I/O bound).
        max_portrait_pixels: portraits with more pixels are refused from their header, without
            being decoded.
        framing: with ``portrait="face"``, each portrait's face is looked for (a portrait
            without one, or without the ``face_index``-th, is the row's problem).
        strict: every manifest column the pipeline does not read is a problem (default: kept
            as the rows' extra columns).
        settled: ``settled(row)`` True takes a row out before its media are probed (a rerun's
            rows that are already rendered: nothing of theirs is opened, no face searched).

    Returns:
        The rows ready to render and every problem of every row. Rows with a CSV-level problem
        (blank cell, missing file, ...) are reported with that problem and not probed further.
        A manifest-level problem (e.g. an unknown column) does not stop the rows' checks, so
        everything is reported at once, but then nothing may be rendered: see
        :attr:`Validation.structural`.
    """
    # 1. The CSV: its structure, its cells, and that the files exist.
    parsed = _check_csv(uri, storage, allowed_input_roots=allowed_input_roots, strict=strict)
    if isinstance(parsed, Validation):
        return parsed
    manifest, csv_problems = parsed

    # 2. The rows to probe: no CSV-level problem, and not settled by the caller.
    candidates, done = _rows_to_probe(manifest, csv_problems, settled)

    # 3. Each distinct input file, checked once, in parallel threads.
    started = time.monotonic()
    job_framing = framing.portrait if framing is not None else None
    finder = _face_finder_for(framing, candidates)
    checked = _check_inputs(storage, candidates, workers, max_portrait_pixels, finder)

    # 4. Each row's verdict: its media facts, or its problems.
    ready, row_problems = _row_verdicts(candidates, checked, max_frames, job_framing)
    problems = sorted(
        [*csv_problems, *row_problems], key=lambda p: p.line if p.line is not None else -1
    )
    logger.info(
        "validated %s: %d row(s) ready, %d problem(s); %d file(s) probed in %.2f s",
        uri,
        len(ready),
        len(problems),
        len(checked),
        time.monotonic() - started,
    )
    return Validation(manifest, ready, problems, done)


def _check_csv(
    uri: str,
    storage: Storage,
    *,
    allowed_input_roots: list[str] | tuple[str, ...],
    strict: bool,
) -> tuple[Manifest, list[ManifestProblem]] | Validation:
    """The parsed manifest and its CSV-level problems, or the whole outcome when the manifest
    cannot be read at all."""
    try:
        manifest, problems = check_manifest(
            uri,
            read_bytes=storage.read_bytes if is_remote(uri) else None,
            exists=storage.exists,
            allowed_input_roots=allowed_input_roots,
            strict=strict,
        )
    except (NotFound, StorageError) as err:
        fix = err.fix or "check the manifest path or URI"
        return Validation(None, [], [ManifestProblem(None, None, uri, err.problem, fix)])
    except ManifestError as err:
        return Validation(None, [], list(err.problems))
    return manifest, list(problems)


def _rows_to_probe(
    manifest: Manifest,
    problems: list[ManifestProblem],
    settled: Callable[[ManifestRow], bool] | None,
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """The rows whose media are to be checked, and the rows `settled` took out.

    A row with a CSV-level problem is in neither: that problem is its verdict.
    """
    bad_lines = {p.line for p in problems if p.line is not None}
    candidates = [row for row in manifest.rows if row.line not in bad_lines]
    done = [row for row in candidates if settled is not None and settled(row)]
    done_ids = {row.id for row in done}
    return [row for row in candidates if row.id not in done_ids], done


def _face_finder_for(framing: FramingConfig | None, rows: list[ManifestRow]) -> _FaceFinder | None:
    """A face finder when some row is framed by the face (loading the detector costs time)."""
    if framing is None:
        return None
    if not any((row.framing or framing.portrait) == "face" for row in rows):
        return None
    return _FaceFinder(framing)


def _check_inputs(
    storage: Storage,
    rows: list[ManifestRow],
    workers: int,
    max_pixels: int,
    finder: _FaceFinder | None,
) -> dict[tuple[Column, str], _Checked]:
    """Every distinct (column, uri) of `rows` checked once, `workers` files at a time."""
    inputs = sorted({key for row in rows for key in _row_inputs(row)})
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(
            lambda key: _check_input(storage, key[0], key[1], max_pixels, finder), inputs
        )
        return dict(zip(inputs, results, strict=True))


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Problem:
    """What is wrong with one input file, and what the user should do."""

    message: str
    fix: str


@dataclass(frozen=True)
class _Checked:
    """What checking one input file for one column found: its facts, or its problem."""

    problem: _Problem | None = None
    portrait_size: tuple[int, int] | None = None  # portraits: (width, height), upright
    info: MediaInfo | None = None  # videos and audio files
    notes: tuple[str, ...] = ()
    face: tuple[float, float, float, float] | None = None  # portraits, with face framing
    face_problem: _Problem | None = None  # portraits: no face (or not the face_index-th)


def _row_inputs(row: ManifestRow) -> list[tuple[Column, str]]:
    """The (column, uri) pairs a row reads."""
    inputs: list[tuple[Column, str]] = [
        ("portrait", row.portrait),
        ("driving_video", row.driving_video),
    ]
    if row.audio:
        inputs.append(("audio", row.audio))
    return inputs


def _row_verdicts(
    rows: list[ManifestRow],
    checked: dict[tuple[Column, str], _Checked],
    default_max: int | None,
    job_framing: str | None,
) -> tuple[list[RowMedia], list[ManifestProblem]]:
    """The rows ready to render, and the other rows' problems, in row order."""
    ready: list[RowMedia] = []
    problems: list[ManifestProblem] = []
    for row in rows:
        media, row_problems = _row_verdict(row, checked, default_max, job_framing)
        problems.extend(row_problems)
        if media is not None:
            ready.append(media)
    return ready, problems


def _row_verdict(
    row: ManifestRow,
    checked: dict[tuple[Column, str], _Checked],
    default_max: int | None,
    job_framing: str | None = None,
) -> tuple[RowMedia | None, list[ManifestProblem]]:
    """The row's problems (one per bad input), or its media facts when it has none."""
    problems = [
        ManifestProblem.for_row(row, column, uri, result.problem.message, result.problem.fix)
        for column, uri in _row_inputs(row)
        if (result := checked[(column, uri)]).problem is not None
    ]
    portrait = checked[("portrait", row.portrait)]
    face_framed = (row.framing or job_framing) == "face"
    if face_framed and not problems and portrait.face_problem is not None:
        problem = portrait.face_problem
        problems.append(
            ManifestProblem.for_row(row, "portrait", row.portrait, problem.message, problem.fix)
        )
    if problems:
        return None, problems
    media = _row_media(row, checked, default_max)
    if not face_framed:
        media = replace(media, face=None)
    return media, []


def _row_media(
    row: ManifestRow, checked: dict[tuple[Column, str], _Checked], default_max: int | None
) -> RowMedia:
    """What a row without problems will render: frames after the cap, sound, notes."""
    portrait = checked[("portrait", row.portrait)]
    driving = checked[("driving_video", row.driving_video)]
    audio = checked[("audio", row.audio)] if row.audio else None
    assert portrait.portrait_size is not None and driving.info is not None
    video = driving.info.video
    assert video is not None  # a driving video without one has a problem
    cap = row.max_frames if row.max_frames is not None else default_max
    frames = video.num_frames if cap is None else min(cap, video.num_frames)
    notes = portrait.notes + driving.notes + (audio.notes if audio else ())
    if frames < video.num_frames:
        notes += (
            f"driving video: {video.num_frames} frames, longer than max_frames={cap}: "
            f"the first {frames} are rendered",
        )
    if notes:
        logger.info("row %d (%s): %s", row.number, row.id, "; ".join(notes))
    return RowMedia(
        row=row,
        frames=frames,
        frame_rate=video.frame_rate,
        duration_seconds=float(frames / video.frame_rate),
        # an audio file without sound is a problem, so a given one has sound
        has_audio=audio is not None or driving.info.audio is not None,
        portrait_size=portrait.portrait_size,
        notes=notes,
        face=portrait.face,
    )


# --------------------------------------------------------------------------------------------
# One input file
# --------------------------------------------------------------------------------------------


def _check_input(
    storage: Storage, column: Column, uri: str, max_pixels: int, finder: _FaceFinder | None
) -> _Checked:
    """Check one input file for `column`; never raises (a failure becomes the file's problem)."""
    noun = _NOUNS[column]
    try:
        with storage.open_input(uri) as source:
            if _is_empty(source):  # said up front: readers fail on empty streams in odd ways
                return _Checked(_Problem(f"{noun} is an empty file (0 bytes)", _FIXES[column]))
            if column == "portrait":
                return _check_portrait(source, max_pixels, finder, uri)
            if column == "driving_video":
                return _check_driving_video(source)
            return _check_audio(source)
    except StorageError as err:
        return _Checked(
            _Problem(
                f"{noun} could not be read from storage: {err.problem}",
                err.fix or "check the URI, and that the job's settings can reach the store",
            )
        )
    except Exception as err:  # noqa: BLE001 - one odd file must not stop the other rows' checks
        logger.exception("checking %s %s failed unexpectedly", noun, uri)
        return _Checked(
            _Problem(
                f"{noun} could not be checked: internal error {type(err).__name__}: {err}",
                INTERNAL_FIX,
            )
        )


def _reason(err: BaseException) -> str:
    """The underlying library's words for an error (FFmpeg's or PIL's), else the error's own."""
    cause = err.__cause__
    if cause is None:
        return str(err)
    return getattr(cause, "strerror", None) or str(cause) or type(cause).__name__


# --------------------------------------------------------------------------------------------
# Portraits
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ImageHeader:
    """What an image's header says, read without decoding the pixels."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int  # EXIF orientation, 1 = upright
    transparent: bool


class _FaceFinder:
    """The face framing will animate in a decoded portrait, or the problem of not finding it."""

    def __init__(self, framing: FramingConfig) -> None:
        self.face_index = framing.face_index
        self.detector = FaceDetector()

    def __call__(self, image: Any, uri: str) -> tuple[Any, str] | _Problem:
        faces = self.detector.detect(image)
        if len(faces) <= self.face_index:
            message = no_face_message(uri, len(faces), self.face_index)
            verdict, _, fix = message.partition("; ")
            return _Problem(verdict.removeprefix(f"{uri}: "), fix)
        note = ""
        if len(faces) > 1:
            note = (
                f"portrait: {len(faces)} faces found; face {self.face_index} (0: the largest) is "
                "animated (framing.face_index)"
            )
        return faces[self.face_index], note


def _check_portrait(
    source: MediaSource, max_pixels: int, finder: _FaceFinder | None = None, uri: str = ""
) -> _Checked:
    """Header first (kind, size, pixel count: no decoding), then a full decode of the pixels."""
    header = _image_header(source, max_pixels)
    if isinstance(header, _Problem):
        return _Checked(header)
    problem = _image_size_problem(header, max_pixels)
    if problem is not None:
        return _Checked(problem)
    try:
        image = load_image(source)
    except MediaError as err:
        return _Checked(
            _Problem(
                f"portrait image data is truncated or corrupt ({_reason(err)})",
                f"export the image again or copy the complete file; {PORTRAIT_FIX}",
            )
        )
    height, width = image.shape[:2]
    notes = _image_notes(header)
    face = None
    if finder is not None:
        found = finder(image, uri)
        if isinstance(found, _Problem):  # a problem only for rows framed by the face
            return _Checked(portrait_size=(width, height), notes=notes, face_problem=found)
        box, note = found
        face = (box.x, box.y, box.width, box.height)
        notes += (note,) if note else ()
    return _Checked(portrait_size=(width, height), notes=notes, face=face)


def _image_header(source: MediaSource, max_pixels: int) -> _ImageHeader | _Problem:
    """Open the image lazily: PIL reads the header, not the pixel data."""
    if not isinstance(source, (str, os.PathLike)):
        source.seek(0)
    try:
        with Image.open(source) as image:
            return _ImageHeader(
                format=image.format or "?",
                mode=image.mode,
                width=image.width,
                height=image.height,
                orientation=_orientation(image),
                transparent=image.mode in TRANSPARENT_MODES or "transparency" in image.info,
            )
    except Image.DecompressionBombError as err:  # PIL's own limit, far above ours
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        return _too_many_pixels(int(pixels.group(1)) if pixels else None, None, max_pixels)
    except UnidentifiedImageError:
        return _not_an_image(source)
    except (OSError, SyntaxError, ValueError, struct.error) as err:
        return _Problem(
            f"portrait header cannot be read ({err}): the file is corrupt",
            f"export the image again; {PORTRAIT_FIX}",
        )


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright), without decoding the pixels.

    A PNG's ``eXIf`` chunk may follow the pixel data, and PIL's ``getexif`` then decodes the
    whole image to find it: such PNGs report 1 here (`load_image` still turns them upright).
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return orientation if isinstance(orientation, int) else 1


def _image_size_problem(header: _ImageHeader, max_pixels: int) -> _Problem | None:
    """Too many pixels to decode safely, or too few to animate."""
    width, height = header.width, header.height
    if width * height > max_pixels:
        return _too_many_pixels(width * height, f"{width}x{height}", max_pixels)
    if min(width, height) < MIN_PORTRAIT_SIDE:
        return _Problem(
            f"portrait is {width}x{height} pixels; its shorter side must be at least "
            f"{MIN_PORTRAIT_SIDE} pixels",
            f"use a portrait at least {MIN_PORTRAIT_SIDE}x{MIN_PORTRAIT_SIDE} "
            "(512x512 or more is best)",
        )
    return None


def _too_many_pixels(pixels: int | None, size: str | None, max_pixels: int) -> _Problem:
    """The verdict on an image over the pixel limit (`size` is ``WxH`` when known)."""
    if pixels is None:
        declared = "more pixels than PIL allows"
    else:
        declared = f"{size or f'{pixels:,}'} pixels ({pixels / 1e6:,.0f} megapixels)"
    return _Problem(
        f"portrait declares {declared}, over the {max_pixels / 1e6:g}-megapixel limit; "
        "it was not decoded (a guard against decompression bombs)",
        "downscale it, e.g. to 2048x2048 (the model works at 512x512)",
    )


def _not_an_image(source: MediaSource) -> _Problem:
    """PIL cannot tell what the file is: say what it looks like instead."""
    kind = _sniff(source)
    if kind.category == "video":
        frame = f"ffmpeg -i {shlex.quote(posixpath.basename(source_name(source)))} -frames:v 1 portrait.png"
        return _Problem(
            f"portrait is {kind.description}, not a still image",
            f"{PORTRAIT_FIX}; to use a frame of the video: {frame}",
        )
    if kind.category == "image":
        return _Problem(
            f"portrait is {kind.description} that cannot be read here (PIL cannot decode it)",
            f"convert it to JPEG or PNG; {PORTRAIT_FIX}",
        )
    return _Problem(f"portrait is {kind.description}, not an image", PORTRAIT_FIX)


def _image_notes(header: _ImageHeader) -> tuple[str, ...]:
    notes: list[str] = []
    if header.mode != "RGB":
        notes.append(f"portrait: {header.format} {header.mode} image converted to 8-bit RGB")
    if header.transparent:
        notes.append("portrait: transparent areas composited on white")
    if header.orientation != 1:
        notes.append(f"portrait: EXIF orientation {header.orientation}, turned upright")
    return tuple(notes)


# --------------------------------------------------------------------------------------------
# Driving videos and audio files
# --------------------------------------------------------------------------------------------


def _check_driving_video(source: MediaSource) -> _Checked:
    try:
        info = probe(source)
    except MediaError as err:
        return _Checked(_unreadable_video(source, err))
    video = info.video
    if video is None:
        if info.audio is not None:
            return _Checked(
                _Problem(
                    f"driving video has no video stream, only audio ({_describe_audio(info.audio)})",
                    f"{VIDEO_FIX}; to use this sound, put the file in the audio column",
                )
            )
        return _Checked(
            _Problem(
                "driving video has no stream at all: it is an empty or zero-frame file",
                f"{VIDEO_FIX}, with at least one frame",
            )
        )
    return _Checked(info=info, notes=_video_notes(video))


def _unreadable_video(source: MediaSource, err: MediaError) -> _Problem:
    """The verdict on a driving video that `probe` could not read."""
    kind = _sniff(source)
    if kind.category in ("image", "audio", "other"):
        fix = VIDEO_FIX
        if kind.category == "audio":
            fix += "; to use this sound, put the file in the audio column"
        return _Problem(f"driving video is {kind.description}, not a video", fix)
    if kind.description == _MP4 and _mp4_lacks_moov(source):
        return _Problem(
            "driving video is an MP4/MOV file cut short: it has no 'moov' index (the index is "
            "written last, so the upload, copy or recording stopped early)",
            "give the complete file: copy or upload it again (a recording must be stopped "
            "properly for its index to be written)",
        )
    cut = _CUT_AFTER_INDEX.search(str(err))
    if cut is not None:
        return _Problem(
            f"driving video is cut short: the file has {cut['size']} bytes but its index says "
            f"its data runs to byte {cut['end']} (the upload or copy stopped early)",
            "give the complete file: copy or upload it again",
        )
    if isinstance(err.__cause__, EOFError):
        return _Problem(
            "driving video ends before any media data: it is empty, has zero frames, or was cut "
            "short",
            f"{VIDEO_FIX}, with at least one frame",
        )
    return _Problem(
        _restate(err, source, "driving video"),
        f"{VIDEO_FIX} that plays from start to end (re-encode it if needed: "
        "ffmpeg -i in.mov -c:v libx264 out.mp4)",
    )


# pipeline.media's words for an MP4 whose index (written first) points past the end of the file
_CUT_AFTER_INDEX = re.compile(
    r"is truncated: its index places \w+ stream #\d+ data up to byte (?P<end>[\d,]+) but the "
    r"file has (?P<size>[\d,]+) bytes"
)


def _restate(err: MediaError, source: MediaSource, noun: str) -> str:
    """The media layer's message about `source`, with the file's name replaced by `noun`.

    Media messages start with the source's name (``clip.mp4 is truncated: ...`` or
    ``clip.mp4: video stream #0 ...``); the problem's location already names the file.
    """
    text, name = str(err), source_name(source)
    if text.startswith(name + " "):
        return noun + text[len(name) :]
    if text.startswith(name + ":"):
        return f"{noun} cannot be decoded{text[len(name) :]}"
    return f"{noun} cannot be decoded: {text}"


def _check_audio(source: MediaSource) -> _Checked:
    try:
        info = probe(source)
    except MediaError as err:
        return _Checked(_unreadable_audio(source, err))
    if info.audio is None:
        if info.video is not None:
            return _Checked(
                _Problem(
                    f"audio file has no audio stream: it is a video without sound "
                    f"({_describe_video(info.video)})",
                    AUDIO_FIX,
                )
            )
        return _Checked(_Problem("audio file has no stream at all: it is empty", AUDIO_FIX))
    return _Checked(info=info)


def _unreadable_audio(source: MediaSource, err: MediaError) -> _Problem:
    """The verdict on an audio file that `probe` could not read."""
    kind = _sniff(source)
    if isinstance(err.__cause__, EOFError):
        message = "audio file ends before any audio data: it is empty or was cut short"
    elif kind.category in ("image", "other"):
        message = f"audio file is {kind.description}, not audio"
    else:
        message = (
            f"audio file is {kind.description} that cannot be decoded ({_reason(err)}): it is "
            "corrupt or cut short"
        )
    return _Problem(message, AUDIO_FIX)


def _video_notes(video: VideoStreamInfo) -> tuple[str, ...]:
    notes: list[str] = []
    if video.is_variable_frame_rate:
        notes.append(
            f"driving video: variable frame rate, resampled to its average "
            f"{float(video.frame_rate):.3f} fps"
        )
    if video.rotation:
        notes.append(f"driving video: rotation metadata {video.rotation}°, frames turned upright")
    if video.width % 2 or video.height % 2:
        notes.append(
            f"driving video: odd size {video.width}x{video.height}, frames resized to the "
            "model's square size"
        )
    return tuple(notes)


def _describe_video(video: VideoStreamInfo) -> str:
    return f"{video.codec} {video.width}x{video.height}, {video.num_frames} frames"


def _describe_audio(audio: AudioStreamInfo) -> str:
    return f"{audio.codec}, {audio.sample_rate} Hz, {audio.layout}"


# --------------------------------------------------------------------------------------------
# What a file really is (for messages about files the libraries cannot read)
# --------------------------------------------------------------------------------------------

_MP4 = "an MP4/MOV file"
_HEAD_BYTES = 64
_MAX_BOXES = 64


@dataclass(frozen=True)
class _Kind:
    """What a file looks like from its first bytes."""

    description: str  # "a PNG image", "an MP4/MOV file", ...
    category: Literal["image", "video", "audio", "other"]


# (prefix, offset, kind): checked in order, first match wins
_SIGNATURES: tuple[tuple[bytes, int, _Kind], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, _Kind("a PNG image", "image")),
    (b"\xff\xd8\xff", 0, _Kind("a JPEG image", "image")),
    (b"GIF8", 0, _Kind("a GIF image", "image")),
    (b"BM", 0, _Kind("a BMP image", "image")),
    (b"II*\x00", 0, _Kind("a TIFF image", "image")),
    (b"MM\x00*", 0, _Kind("a TIFF image", "image")),
    (b"WEBP", 8, _Kind("a WebP image", "image")),
    (b"WAVE", 8, _Kind("a WAV audio file", "audio")),
    (b"AVI ", 8, _Kind("an AVI video", "video")),
    (b"ftypheic", 4, _Kind("a HEIC/HEIF image", "image")),
    (b"ftypheix", 4, _Kind("a HEIC/HEIF image", "image")),
    (b"ftypmif1", 4, _Kind("a HEIC/HEIF image", "image")),
    (b"ftypM4A ", 4, _Kind("an M4A audio file", "audio")),
    (b"ftyp", 4, _Kind(_MP4, "video")),
    (b"\x1a\x45\xdf\xa3", 0, _Kind("a Matroska/WebM file", "video")),
    (b"ID3", 0, _Kind("an MP3 audio file", "audio")),
    (b"fLaC", 0, _Kind("a FLAC audio file", "audio")),
    (b"OggS", 0, _Kind("an Ogg file", "audio")),
    (b"%PDF", 0, _Kind("a PDF document", "other")),
    (b"PK\x03\x04", 0, _Kind("a ZIP archive", "other")),
)


@contextmanager
def _binary(source: MediaSource) -> Iterator[IO[bytes]]:
    """`source` as a binary file positioned at 0 (a given stream is rewound, not closed)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            yield handle
    else:
        source.seek(0)
        try:
            yield source
        finally:
            source.seek(0)


def _is_empty(source: MediaSource) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source) == 0
    with _binary(source) as handle:
        return handle.seek(0, os.SEEK_END) == 0


def _sniff(source: MediaSource) -> _Kind:
    """What the file's first bytes say it is."""
    with _binary(source) as handle:
        head = handle.read(_HEAD_BYTES)
    for prefix, offset, kind in _SIGNATURES:
        if head[offset : offset + len(prefix)] == prefix:
            return kind
    if head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return _Kind("an MP3 audio file", "audio")
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml")):
        return _Kind("an HTML/XML page (often an error page saved in place of the file)", "other")
    text = head.decode("utf-8", errors="replace")[:-1]  # the last character may be cut
    if "\ufffd" not in text and all(char.isprintable() or char in "\t\r\n" for char in text):
        return _Kind("a text file", "other")
    return _Kind("unrecognised binary data", "other")


def _mp4_lacks_moov(source: MediaSource) -> bool:
    """Walk the top-level boxes (headers only): True when an MP4/MOV has no 'moov' box."""
    with _binary(source) as handle:
        end = handle.seek(0, os.SEEK_END)
        position = 0
        for _ in range(_MAX_BOXES):
            if position + 8 > end:
                return True
            handle.seek(position)
            header = handle.read(16)
            size, box = struct.unpack(">I4s", header[:8])
            if box == b"moov":
                return False
            if size == 1 and len(header) == 16:  # 64-bit size follows the type
                size = struct.unpack(">Q", header[8:16])[0]
            elif size == 0:  # the box runs to the end of the file
                return True
            if size < 8:
                return False  # not a box structure we understand: make no claim
            position += size
    return False
