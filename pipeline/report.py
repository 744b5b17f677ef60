"""``report.html``: a job's results as one self-contained page a person would rather look at.

`write_report` reads ``summary.json`` (and, when present, ``status.json`` for when and how long
the job ran) from a job folder and writes ``report.html`` beside them. The page is rendered from
the Jinja2 templates in ``pipeline/templates/`` (autoescaped): a header with the job's state and
totals, the job's outputs as they stand beside this run's counts, the run history, provenance
(model, weights, preset, encoder, versions), the rows on the workers over time and the job's
frames per second over time. The rows themselves travel in the page as JSON (``|tojson``, safe
inside ``<script>``) and the page's script lays them out page by page with search, sort and a
status filter, so a 1,000-row job opens as fast as a 10-row one. Per row: the portrait (with the
face found and the square animated), the driving clip and the output side by side, the driving
clip following the output's playback; a contact sheet (click a frame to play from there); the
row's extra manifest columns; which run rendered it; its identity and motion signals.

Images are JPEG files under ``report/`` next to the page (``report/<row>-poster.jpg``,
``report/<row>-sheet.jpg``, ``report/<row>-portrait.jpg``); videos and inputs are linked by their
path relative to the page, so the folder can be copied, served or synced as a whole (an input the
page cannot reach, e.g. on S3 beside a local job folder, gets a note instead). ``report/assets.json``
records what each image was made from (source URI and `Storage.fingerprint`): rebuilding the page
of an unchanged job decodes no video. ``python -m pipeline.report <job folder>`` rebuilds the
report of a job. Local and ``s3://`` job folders work alike (reads through `Storage.open`,
writes through `Storage.put`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import posixpath
import re
import sys
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from functools import cache
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup
from PIL import Image, ImageDraw, ImageFont

from pipeline.config import StorageConfig
from pipeline.media import MediaSource, VideoReader, load_image
from pipeline.progress import ROW_STATUSES, format_duration
from pipeline.storage import (
    NotFound,
    Storage,
    StorageError,
    join,
    relative_path,
    remote_scheme,
)
from pipeline.timeline import FpsSeries, fps_over_time, nice_ticks, timeline_svg

__all__ = [
    "ASSETS_FOLDER",
    "ASSETS_INDEX",
    "REPORT_NAME",
    "ReportError",
    "asset_stem",
    "build_report",
    "pick_frame_indices",
    "write_report",
]

logger = logging.getLogger(__name__)

#: File name of the page inside the job folder.
REPORT_NAME = "report.html"
#: Folder (inside the job folder) holding the page's JPEG images.
ASSETS_FOLDER = "report"
#: The index of those images (inside `ASSETS_FOLDER`): what each was made from.
ASSETS_INDEX = "assets.json"
#: Bumped when the images or the index change shape: older indexes are then ignored.
ASSETS_VERSION = 1
#: Largest width of one frame on the poster and on the contact sheet (smaller videos stay smaller).
THUMB_WIDTH = 320
#: Frames on a contact sheet, and how many of them per sheet row.
SHEET_FRAMES = 8
SHEET_COLUMNS = 4
JPEG_QUALITY = 82
#: Height of the timestamp text on a contact-sheet frame, as a share of the frame's width (the
#: sheet is shown about 4 x 95 px wide in a card: the labels must stay readable there).
LABEL_SCALE = 0.13
#: Outputs up to this many frames are decoded once; longer ones are read by seeking per frame.
DECODE_ALL_MAX_FRAMES = 1000
#: Width of the portrait thumbnail (with the face and square drawn on it).
PORTRAIT_THUMB_WIDTH = 200
#: Rows per page of the row list (the reader can change it on the page).
PAGE_SIZE = 50

#: Display order of the rows: problems first, then the rest in summary order.
_STATUS_ORDER = {"failed": 0, "quarantined": 1, "interrupted": 2, "done": 3, "skipped": 4}
_FAILURES = ("failed", "quarantined")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")

#: What the signals chart of a row measures, and what it does not (shown on every chart).
SIGNALS_NOTE = (
    "Identity: cosine similarity of the CLIP image embedding of output frames to the portrait's "
    "— a drop means the output drifts away from the portrait's look; it does not judge lip sync, "
    "realism or expression. Motion: how much the output changes from frame to frame, beside the "
    "same for the driving clip (a flat output under a moving driving clip is a frozen face)."
)


class ReportError(ValueError):
    """The job folder has no usable ``summary.json`` (nothing to report on)."""


# --------------------------------------------------------------------------------------------
# What the page shows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumbnail:
    """One picked frame of an output, scaled down."""

    index: int  # frame index in the output
    pts_seconds: float  # its presentation time
    image: Image.Image


@dataclass(frozen=True)
class Preview:
    """A row's output as the page links it (URLs relative to ``report.html``)."""

    video_src: str | None = None  # None: the output is missing or not reachable from the page
    poster_src: str | None = None
    sheet_src: str | None = None
    times: tuple[float, ...] = ()  # presentation times of the contact-sheet frames, in order
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    duration_seconds: float | None = None
    problem: str | None = None  # why there is no picture (missing output, unreadable video)


@dataclass(frozen=True)
class InputView:
    """A row's portrait or driving clip as the page shows it."""

    src: str | None = None  # the input itself, relative to the page (None: not reachable)
    thumb: str | None = None  # the portrait's thumbnail under report/
    framed: bool = False  # the thumbnail has the face and square drawn on it
    note: str | None = None  # why it is not shown


@dataclass(frozen=True)
class JobRun:
    """When and how the job ran, from ``summary["run"]`` or ``status.json`` (None: unknown)."""

    state: str | None = None  # finished | failed | interrupted | running
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_seconds: float | None = None
    total_rows: int | None = None  # rows the job set out to do
    run_id: str | None = None


@dataclass(frozen=True)
class Badge:
    """The job's state as the header's badge: a label and a tone (ok, bad, warn, live)."""

    label: str
    tone: str


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def write_report(
    job_folder_uri: str, storage: Storage, *, summary: Mapping[str, Any] | None = None
) -> str:
    """Build the report of a job folder and write it as ``<job folder>/report.html``.

    Args:
        job_folder_uri: the job's output folder (local path or ``s3://`` URI).
        storage: reads the folder and writes the page and its images.
        summary: the ``summary.json`` document; None reads it from the folder.

    Returns:
        The URI of the written ``report.html``.

    Raises:
        ReportError: there is no summary to report on.
    """
    page = build_report(job_folder_uri, storage, summary=summary)
    uri = join(job_folder_uri, REPORT_NAME)
    storage.put(page.encode("utf-8"), uri)
    logger.debug("report: %s", uri)
    return uri


def build_report(
    job_folder_uri: str, storage: Storage, *, summary: Mapping[str, Any] | None = None
) -> str:
    """The HTML of a job's report; writes the page's JPEG images under ``report/`` as it goes
    (reusing those ``report/assets.json`` says are still current).

    Args:
        job_folder_uri: the job's output folder (local path or ``s3://`` URI).
        storage: reads summary, status and outputs; writes the images.
        summary: the ``summary.json`` document; None reads it from the folder.

    Returns:
        The complete, self-contained HTML page (links relative to the job folder).

    Raises:
        ReportError: `summary` is None and the folder has no readable ``summary.json``.
    """
    document = dict(summary) if summary is not None else load_summary(job_folder_uri, storage)
    rows = _rows_in_display_order(document.get("rows") or [])
    run = _job_run(document, _load_json(join(job_folder_uri, "status.json"), storage))
    assets = AssetIndex(job_folder_uri, storage)
    inputs = _InputLinks(job_folder_uri, storage)
    row_data = []
    for row in rows:
        preview = _row_preview(row, job_folder_uri, storage, assets)
        portrait = _portrait(row, job_folder_uri, storage, assets, inputs)
        driving = inputs.link(_row_inputs(row).get("driving_video"), "driving clip")
        row_data.append(_row_data(row, preview, portrait, driving))
    assets.save()
    links = [
        name
        for name in ("summary.json", "status.json", "config.yaml")
        if storage.exists(join(job_folder_uri, name))
    ]
    return _render_page(document, run, rows, row_data, links)


def load_summary(job_folder_uri: str, storage: Storage) -> dict[str, Any]:
    """The job's ``summary.json`` as a dict; `ReportError` if it is missing or not JSON."""
    uri = join(job_folder_uri, "summary.json")
    try:
        document = json.loads(storage.read_bytes(uri))
    except NotFound as err:
        raise ReportError(
            f"{uri} does not exist: the job has not finished (or never ran); a report needs it"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReportError(f"{uri} is not valid JSON ({err}); rerun the job to rewrite it") from err
    if not isinstance(document, dict) or not isinstance(document.get("rows", []), list):
        raise ReportError(f"{uri} is not a job summary (expected an object with a 'rows' list)")
    return document


def _load_json(uri: str, storage: Storage) -> dict[str, Any] | None:
    """An optional JSON object (None when missing or unreadable: the report is built anyway)."""
    try:
        document = json.loads(storage.read_bytes(uri))
    except NotFound:
        return None
    except (StorageError, json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("report: ignoring %s: %s", uri, err)
        return None
    return document if isinstance(document, dict) else None


def _job_run(summary: Mapping[str, Any], status: Mapping[str, Any] | None) -> JobRun:
    """When the job ran: ``summary["run"]`` first (this run's own record), else ``status.json``
    (its end time and elapsed seconds); the live state always from ``status.json``."""
    status = status or {}
    this_run = _mapping(summary.get("run"))
    finished_at = _parse_time(this_run.get("finished_at")) or _parse_time(status.get("updated_at"))
    wall = _number_or_none(this_run.get("wall_seconds"))
    if wall is None:
        wall = _number_or_none(status.get("elapsed_seconds"))
    started_at = _parse_time(this_run.get("started_at"))
    if started_at is None and finished_at and wall:
        started_at = finished_at - timedelta(seconds=wall)
    total = _mapping(status.get("rows")).get("total")
    state = status.get("state") or this_run.get("state")
    return JobRun(
        state=str(state) if state else None,
        started_at=started_at,
        finished_at=finished_at,
        wall_seconds=wall,
        total_rows=total if isinstance(total, int) else None,
        run_id=str(this_run["id"]) if this_run.get("id") else None,
    )


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, timezone.utc)
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _rows_in_display_order(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Row dicts, failed and quarantined first (stable: summary order within a status)."""
    valid = [dict(row) for row in rows if isinstance(row, Mapping)]
    return sorted(valid, key=lambda row: _STATUS_ORDER.get(str(row.get("status")), 5))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# Frames: picking, decoding, poster and contact sheet
# --------------------------------------------------------------------------------------------


def pick_frame_indices(num_frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """`count` frame indices spread evenly over `num_frames` (the centre of each equal slice).

    Fewer when the video has fewer frames; empty for an empty video. Sorted, without repeats.
    """
    if num_frames <= 0 or count <= 0:
        return []
    count = min(count, num_frames)
    return sorted({min(num_frames - 1, int((i + 0.5) * num_frames / count)) for i in range(count)})


def _thumbnail(frame: np.ndarray) -> Image.Image:
    """An (H, W, 3) uint8 frame as a PIL image at most `THUMB_WIDTH` wide (aspect kept)."""
    image = Image.fromarray(frame)
    if image.width > THUMB_WIDTH:
        height = max(1, round(image.height * THUMB_WIDTH / image.width))
        image = image.resize((THUMB_WIDTH, height), Image.Resampling.LANCZOS)
    return image


def _grab_thumbnails(
    source: MediaSource, reader: VideoReader, indices: Sequence[int]
) -> list[Thumbnail]:
    """Thumbnails of the frames at `indices`: one pass for short videos, one seek per frame else."""
    rate = reader.frame_rate
    wanted = set(indices)
    picked: list[Thumbnail] = []
    if reader.num_frames <= DECODE_ALL_MAX_FRAMES:
        for index, frame in enumerate(reader):
            if index in wanted:
                picked.append(Thumbnail(index, float(index / rate), _thumbnail(frame)))
                if len(picked) == len(wanted):
                    break
        return picked
    for index in indices:
        one = VideoReader(source, start_frame=index, max_frames=index + 1)
        for frame in one:
            picked.append(Thumbnail(index, float(index / rate), _thumbnail(frame)))
    return picked


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def format_timestamp(seconds: float, digits: int = 1) -> str:
    """``0:03.2``: minutes, seconds and `digits` decimals (hours when needed: ``1:02:03.4``)."""
    scale = 10**digits
    ticks = round(max(seconds, 0.0) * scale)
    whole, fraction = divmod(ticks, scale)
    return f"{format_duration(whole)}.{fraction:0{digits}d}"


def timestamp_digits(times: Sequence[float]) -> int:
    """Decimals that keep neighbouring timestamps apart: 2 when two are < 0.1 s apart, else 1."""
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    return 2 if gaps and min(gaps) < 0.1 else 1


def _label(image: Image.Image, text: str) -> None:
    """Draw `text` on a dark tag in the bottom-left corner of `image` (in place)."""
    draw = ImageDraw.Draw(image, "RGBA")
    font = _font(max(11, round(image.width * LABEL_SCALE)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, image.width // 64)
    x, y = pad, image.height - (bottom - top) - 3 * pad
    draw.rectangle(
        (x, y, x + right - left + 2 * pad, y + bottom - top + 2 * pad), fill=(0, 0, 0, 170)
    )
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(255, 255, 255, 255))


def contact_sheet(thumbnails: Sequence[Thumbnail], columns: int = SHEET_COLUMNS) -> Image.Image:
    """The thumbnails in a grid (row by row), each labelled with its timestamp."""
    if not thumbnails:
        raise ValueError("contact_sheet() needs at least one thumbnail")
    width = max(t.image.width for t in thumbnails)
    height = max(t.image.height for t in thumbnails)
    columns = max(1, min(columns, len(thumbnails)))
    rows = -(-len(thumbnails) // columns)
    sheet = Image.new("RGB", (columns * width, rows * height), (17, 24, 39))
    digits = timestamp_digits([t.pts_seconds for t in thumbnails])
    for position, thumb in enumerate(thumbnails):
        cell = thumb.image.copy()
        _label(cell, format_timestamp(thumb.pts_seconds, digits))
        row, column = divmod(position, columns)
        sheet.paste(cell, (column * width, row * height))
    return sheet


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# The image cache: report/assets.json
# --------------------------------------------------------------------------------------------


class AssetIndex:
    """``report/assets.json``: per image set (a row's poster and sheet, its portrait thumbnail)
    the source it was made from, that source's `Storage.fingerprint` (size, mtime and a hash of
    its ends; ETag on S3) and what was learnt decoding it. An entry whose source, fingerprint and
    parameters match and whose files all exist is reused: nothing is decoded again."""

    def __init__(self, job_folder_uri: str, storage: Storage) -> None:
        self.folder = join(job_folder_uri, ASSETS_FOLDER)
        self.storage = storage
        self.uri = join(self.folder, ASSETS_INDEX)
        loaded = _load_json(self.uri, storage) or {}
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


def _fingerprint(uri: str, storage: Storage) -> str | None:
    try:
        return storage.fingerprint(uri)
    except (StorageError, OSError) as err:
        logger.debug("report: no fingerprint of %s: %s", uri, err)
        return None


# --------------------------------------------------------------------------------------------
# Rows: where their outputs and inputs are, and their previews
# --------------------------------------------------------------------------------------------


def asset_stem(row_id: str) -> str:
    """A file-name-safe stem for a row's images: the id itself when safe, else slug + hash."""
    if _SAFE_NAME.fullmatch(row_id):
        return row_id
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", row_id).strip("._-")[:40] or "row"
    digest = hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def _output_uri(output: str, job_folder_uri: str, storage: Storage) -> str | None:
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


def _relative_url(target_uri: str, job_folder_uri: str, storage: Storage) -> str | None:
    """The URL of `target_uri` relative to the job folder (None: not reachable from the page)."""
    relative = relative_path(target_uri, job_folder_uri)
    return None if relative is None else urllib.parse.quote(relative, safe="/")


def _row_preview(
    row: Mapping[str, Any], job_folder_uri: str, storage: Storage, assets: AssetIndex
) -> Preview:
    """Find the row's output, make (or reuse) its poster and contact sheet, say how to link them."""
    output = row.get("output")
    if not output:
        return Preview()
    uri = _output_uri(str(output), job_folder_uri, storage)
    if uri is None:
        return Preview(problem=f"the output {output} does not exist (moved or deleted?)")
    video_src = _relative_url(uri, job_folder_uri, storage)
    if uri in assets.made:  # another row of this job shows the same video: same pictures
        return assets.made[uri]
    preview = _make_preview(row, uri, video_src, storage, assets)
    assets.made[uri] = preview
    return preview


def _make_preview(
    row: Mapping[str, Any], uri: str, video_src: str | None, storage: Storage, assets: AssetIndex
) -> Preview:
    """The poster and contact sheet of the output at `uri`: reused from ``report/`` when
    ``assets.json`` says they were made from this very file, else decoded and written."""
    stem = asset_stem(str(row.get("row_id", "")))
    key, fingerprint = f"output:{stem}", _fingerprint(uri, storage)
    cached = assets.lookup(key, uri, fingerprint)
    if cached is not None:
        data = dict(cached["data"])
        data["times"] = tuple(data.get("times") or ())
        return Preview(video_src=video_src, **data)
    try:
        with storage.open_input(uri) as source:
            reader = VideoReader(source)
            thumbnails = _grab_thumbnails(source, reader, pick_frame_indices(reader.num_frames))
            info = reader.info.video
    except (ValueError, OSError, StorageError) as err:  # MediaError is a ValueError
        logger.warning("report: no preview of %s: %s", uri, err)
        problem = Preview(problem=f"no preview: {err}")
        assets.store(key, uri, fingerprint, {}, {"problem": problem.problem})
        return replace_src(problem, video_src)
    if not thumbnails:
        assets.store(key, uri, fingerprint, {}, {"problem": "the output has no frame"})
        return Preview(video_src=video_src, problem="the output has no frame")
    assert info is not None  # VideoReader only opens videos
    poster_name, sheet_name = f"{stem}-poster.jpg", f"{stem}-sheet.jpg"
    preview = Preview(
        poster_src=f"{ASSETS_FOLDER}/{urllib.parse.quote(poster_name)}",
        sheet_src=f"{ASSETS_FOLDER}/{urllib.parse.quote(sheet_name)}",
        times=tuple(t.pts_seconds for t in thumbnails),
        width=info.width,
        height=info.height,
        frame_rate=float(Fraction(info.frame_rate)),
        duration_seconds=reader.num_frames / float(info.frame_rate),
    )
    files = {
        poster_name: _jpeg(thumbnails[len(thumbnails) // 2].image),
        sheet_name: _jpeg(contact_sheet(thumbnails)),
    }
    data = {k: v for k, v in asdict(preview).items() if k != "video_src"}
    assets.store(key, uri, fingerprint, files, data)
    return replace_src(preview, video_src)


def replace_src(preview: Preview, video_src: str | None) -> Preview:
    """`preview` linking the output at `video_src`."""
    return Preview(**{**asdict(preview), "video_src": video_src})


def _row_inputs(row: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(row.get("inputs"))


class _InputLinks:
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
            src = _relative_url(uri, self.folder, self.storage)
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


def _portrait(
    row: Mapping[str, Any],
    job_folder_uri: str,
    storage: Storage,
    assets: AssetIndex,
    links: _InputLinks,
) -> InputView:
    """The row's portrait: a thumbnail (with the face found, green, and the square animated,
    white, when framing found them) and a link to the photo itself."""
    framing = _mapping(row.get("framing"))
    uri = _row_inputs(row).get("portrait") or framing.get("portrait_uri")
    if not isinstance(uri, str) or not uri:
        return InputView()
    link = links.link(uri, "portrait")
    face, square = framing.get("face"), framing.get("square")
    boxes = {"face": face, "square": square} if face and square else None
    stem = asset_stem(str(row.get("row_id", "")))
    name = f"{stem}-portrait.jpg"
    made = ("portrait", uri, json.dumps(boxes))
    if made in assets.made:  # another row has the same portrait, framed the same
        return assets.made[made]
    key, fingerprint = f"portrait:{stem}", _fingerprint(uri, storage)
    thumb_src = f"{ASSETS_FOLDER}/{urllib.parse.quote(name)}"
    view = InputView(src=link.src, thumb=thumb_src, framed=boxes is not None, note=link.note)
    if assets.lookup(key, uri, fingerprint, boxes) is None:
        try:
            with storage.open_input(uri) as source:
                photo = Image.fromarray(load_image(source))
        except (ValueError, OSError, StorageError) as err:
            logger.warning("report: no portrait thumbnail of %s: %s", uri, err)
            note = link.note or f"the portrait cannot be read: {err}"
            return InputView(src=link.src, note=note)
        thumb = _jpeg(_framed_thumbnail(photo, boxes))
        assets.store(key, uri, fingerprint, {name: thumb}, {}, boxes)
    assets.made[made] = view
    return view


def _framed_thumbnail(photo: Image.Image, boxes: Mapping[str, Any] | None) -> Image.Image:
    """`photo` `PORTRAIT_THUMB_WIDTH` wide, with the square (white) and face (green) drawn."""
    factor = PORTRAIT_THUMB_WIDTH / photo.width
    thumb = photo.resize(
        (PORTRAIT_THUMB_WIDTH, max(1, round(photo.height * factor))), Image.Resampling.LANCZOS
    )
    if boxes:
        draw = ImageDraw.Draw(thumb)
        x, y, side = (v * factor for v in boxes["square"])
        draw.rectangle([x, y, x + side, y + side], outline=(255, 255, 255), width=2)
        fx, fy, fw, fh = (v * factor for v in boxes["face"])
        draw.rectangle([fx, fy, fx + fw, fy + fh], outline=(34, 197, 94), width=2)
    return thumb


# --------------------------------------------------------------------------------------------
# The rows as the page's data
# --------------------------------------------------------------------------------------------


def _row_data(
    row: Mapping[str, Any], preview: Preview, portrait: InputView, driving: InputView
) -> dict[str, Any]:
    """One row as the page's script gets it (plain JSON; the script shows every text as text)."""
    row_id = str(row.get("row_id", ""))
    status = str(row.get("status", "unknown"))
    digits = timestamp_digits(preview.times)
    framing = _mapping(row.get("framing"))
    output = None
    if preview.video_src or preview.sheet_src:
        output = {
            "src": preview.video_src,
            "poster": preview.poster_src,
            "sheet": preview.sheet_src,
            "times": [round(t, 4) for t in preview.times],
            "labels": [format_timestamp(t, digits) for t in preview.times],
            "columns": min(SHEET_COLUMNS, len(preview.times)) or 1,
            "width": preview.width,
            "height": preview.height,
            "rate": preview.frame_rate,
            "duration": _round(preview.duration_seconds, 3),
        }
    meta = [f"worker {row.get('worker')}" if row.get("worker") else "no worker"]
    if preview.width and preview.height:
        meta.append(f"{preview.width}×{preview.height}")
    if preview.frame_rate is not None:
        meta.append(f"{preview.frame_rate:.4g} fps")
    if preview.duration_seconds is not None:
        meta.append(f"{preview.duration_seconds:.1f} s")
    if row.get("conditioning"):
        meta.append(f"driving conditioning {row['conditioning']}")
    lost = framing.get("driving_frames_without_face")
    if lost:
        meta.append(f"{lost} driving frame(s) without a face: cut whole")
    audio = _row_inputs(row).get("audio")
    return {
        "id": row_id,
        "stem": asset_stem(row_id),
        "status": status if status in ROW_STATUSES else "unknown",
        "label": status,
        "frames": _round(row.get("frames")),
        "seconds": _round(row.get("seconds"), 3),
        "fps": _round(row.get("fps"), 3),
        "attempts": _round(row.get("attempts")),
        "worker": str(row.get("worker") or ""),
        "error": str(row["error"]) if row.get("error") else None,
        "failure": status in _FAILURES,
        "output": output,
        "problem": preview.problem,
        "portrait": _nonempty(asdict(portrait)),
        "driving": _nonempty(asdict(driving)),
        "audio": str(audio) if audio else None,
        "extra": {str(k): _text(v) for k, v in _mapping(row.get("extra")).items()},
        "rendered": _rendered(row.get("rendered")),
        "signals": _signals(row.get("signals")),
        "meta": " · ".join(meta),
    }


def _nonempty(view: dict[str, Any]) -> dict[str, Any] | None:
    return view if any(v for v in view.values()) else None


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _round(value: object, digits: int = 0) -> float | int | None:
    number = _number_or_none(value)
    if number is None:
        return None
    return round(number, digits) if digits else round(number)


def _rendered(value: object) -> dict[str, Any] | None:
    """Who rendered the committed output: run, when, how fast (None when not told)."""
    rendered = _mapping(value)
    if not rendered:
        return None
    at = _parse_time(rendered.get("at"))
    return {
        "run": _text(rendered.get("run")) or None,
        "at": _utc(at) if at else _text(rendered.get("at")) or None,
        "seconds": _round(rendered.get("seconds"), 2),
        "fps": _round(rendered.get("fps"), 2),
        "frames": _round(rendered.get("frames")),
        "worker": _text(rendered.get("worker")) or None,
    }


def _signals(value: object) -> dict[str, Any] | None:
    """The row's identity and motion series, finite numbers only (None when not computed)."""
    signals = _mapping(value)
    times = signals.get("times")
    if not isinstance(times, list) or not times:
        return None

    def series(name: str) -> list[float | None] | None:
        values = signals.get(name)
        if not isinstance(values, list) or len(values) != len(times):
            return None
        return [_round(v, 4) for v in values]

    return {
        "times": [_round(t, 3) for t in times],
        "identity": series("identity"),
        "motion": series("motion"),
        "driving_motion": series("driving_motion"),
        "model": _text(signals.get("model")) or None,
    }


# --------------------------------------------------------------------------------------------
# The job: badge, tiles, provenance, history, charts
# --------------------------------------------------------------------------------------------


def job_badge(run: JobRun, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Badge:
    """The header's badge. A job with failed or quarantined rows is never green: red "finished
    with failures"; interrupted is amber; running blue."""
    totals = _mapping(summary.get("totals"))
    statuses = Counter(str(row.get("status")) for row in rows)
    failures = sum(max(int(totals.get(s) or 0), statuses[s]) for s in _FAILURES)
    interrupted = max(int(totals.get("interrupted") or 0), statuses["interrupted"])
    state = run.state or "finished"
    if state == "running":
        return Badge("running", "live")
    if state == "interrupted":
        return Badge("interrupted" + (" with failures" if failures else ""), "warn")
    if state == "failed":
        return Badge("failed", "bad")
    if failures:
        return Badge("finished with failures", "bad")
    if interrupted:
        return Badge("finished, rows interrupted", "warn")
    return Badge(state, "ok" if state == "finished" else "warn")


def _when(run: JobRun) -> str:
    if run.started_at and run.finished_at:
        return f"Ran {_utc(run.started_at)} → {run.finished_at.strftime('%H:%M:%S')} UTC"
    if run.finished_at:
        return f"Last update {_utc(run.finished_at)}"
    if run.started_at:
        return f"Started {_utc(run.started_at)}"
    return ""


def _banner(run: JobRun, rows: int) -> str:
    """A note when the job is still running or stopped before every row had a result."""
    missing = (run.total_rows or 0) - rows
    if run.state in (None, "finished", "failed") and missing <= 0:
        return ""
    what = "is still running" if run.state == "running" else f"was {run.state or 'stopped'}"
    detail = f": {missing} of {run.total_rows} rows have no result yet" if missing > 0 else ""
    return f"This job {what}{detail}. The report shows the rows finished so far."


def _tiles(summary: Mapping[str, Any], run: JobRun, rows: int) -> dict[str, Any]:
    """This run's counts (status tiles filter the rows) and figures."""
    totals = _mapping(summary.get("totals"))
    statuses = [
        {"status": status, "count": _number(totals.get(status, 0) or 0)} for status in ROW_STATUSES
    ]
    stats = [
        (_number(totals.get("frames")), "frames"),
        (format_duration(run.wall_seconds) if run.wall_seconds is not None else "–", "wall time"),
        (format_duration(totals.get("row_seconds")), "row time"),
        # the job's rate (rows overlapping on several workers count once); older summaries and
        # jobs with no rendered row have only the mean rate per row
        (_number(totals.get("aggregate_fps", totals.get("fps")), 1), "frames/s"),
    ]
    return {"rows": rows, "statuses": statuses, "stats": stats}


def _outputs(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The job's outputs as they stand (whichever run rendered them), when the summary says."""
    outputs = _mapping(summary.get("outputs"))
    if not outputs:
        return None
    return {
        "committed": _number(outputs.get("committed")),
        "rows": _number(outputs.get("rows")),
        "frames": _number(outputs.get("frames")),
        "render_time": format_duration(_number_or_none(outputs.get("render_seconds"))),
        "fps": _number(outputs.get("fps"), 1),
    }


#: The runs table's count columns, in order.
RUN_COUNTS = ("done", "failed", "skipped", "quarantined", "interrupted", "frames")


def _runs(summary: Mapping[str, Any], run: JobRun) -> list[dict[str, Any]]:
    """The job's history across reruns, oldest first (this run marked)."""
    found = []
    for entry in summary.get("runs") or []:
        entry = _mapping(entry)
        if not entry:
            continue
        started, finished = (
            _parse_time(entry.get("started_at")),
            _parse_time(entry.get("finished_at")),
        )
        found.append(
            {
                "id": _text(entry.get("id")),
                "started": _utc(started) if started else "–",
                "took": format_duration((finished - started).total_seconds())
                if started and finished
                else "–",
                "state": _text(entry.get("state")) or "–",
                "counts": [_number(entry.get(key)) for key in RUN_COUNTS],
                "fps": _number(entry.get("aggregate_fps"), 1),
                "current": bool(run.run_id) and _text(entry.get("id")) == run.run_id,
            }
        )
    return found


#: Provenance fields in the order a reader looks for them, with their labels.
_PROVENANCE_LABELS = {
    "model": "model",
    "architecture": "architecture",
    "weights_revision": "weights",
    "random_init": "random weights",
    "dtype": "dtype",
    "resolution": "resolution",
    "preset": "preset",
    "video": "video",
    "framing": "framing",
    "streams_per_worker": "streams per worker",
    "versions": "versions",
    "host": "host",
    "command": "command",
    "config": "config",
}


def _provenance(summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What produced the outputs: the summary's provenance, plus the rows' conditioning."""
    provenance = _mapping(summary.get("provenance"))
    items = []
    for key in [*_PROVENANCE_LABELS, *sorted(k for k in provenance if k not in _PROVENANCE_LABELS)]:
        if key not in provenance or provenance[key] in (None, "", {}, []):
            continue
        value = provenance[key]
        if isinstance(value, Mapping):
            text = " · ".join(f"{k} {_text(v)}" for k, v in value.items() if v not in (None, ""))
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        else:
            text = _text(value)
        items.append({"key": key, "label": _PROVENANCE_LABELS.get(key, key), "text": text})
    conditioning = Counter(str(row["conditioning"]) for row in rows if row.get("conditioning"))
    if conditioning:
        text = ", ".join(f"{count} {how}" for how, count in sorted(conditioning.items()))
        items.append({"key": "conditioning", "label": "driving conditioning", "text": text})
    return {
        "items": items,
        "random_init": provenance.get("random_init") is True,
        "command": _text(provenance.get("command")) or None,
    }


@dataclass(frozen=True)
class LineChart:
    """A small line chart's geometry in SVG units, for the template to draw."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    line: str  # polyline points
    area: str  # closed polygon under the line
    mean_line: str  # the running mean, dashed
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)


def fps_chart(series: FpsSeries | None) -> LineChart | None:
    """The job's frames per second over time as a `LineChart` (None without data)."""
    if series is None or len(series.points) < 2:
        return None
    width, height, left, top, bottom, right = 1000, 180, 56, 10, 26, 14
    plot_w, plot_h = width - left - right, height - top - bottom
    end = max(t for t, _ in series.points) or 1.0
    high = max(max(fps for _, fps in series.points), max(m for _, m in series.mean)) or 1.0
    y_ticks = nice_ticks(high, target=4)
    high = max(high, y_ticks[-1])

    def xy(t: float, value: float) -> str:
        return f"{left + t / end * plot_w:.1f},{top + plot_h - value / high * plot_h:.1f}"

    line = " ".join(xy(t, fps) for t, fps in series.points)
    first, last = series.points[0][0], series.points[-1][0]
    area = f"{xy(first, 0)} {line} {xy(last, 0)}"
    mean = " ".join(xy(t, m) for t, m in series.mean)
    return LineChart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=plot_w,
        plot_height=plot_h,
        line=line,
        area=area,
        mean_line=mean,
        x_ticks=[(left + t / end * plot_w, f"{t:g} s") for t in nice_ticks(end, target=8)],
        y_ticks=[(top + plot_h - v / high * plot_h, f"{v:g}") for v in y_ticks],
    )


def _startup_marks(summary: Mapping[str, Any]) -> str:
    startup = _mapping(summary.get("startup"))
    firsts = [
        f"{label} {startup[key]:.1f} s"
        for key, label in (
            ("ray_ready_seconds", "Ray up"),
            ("workers_ready_seconds", "workers ready"),
            ("first_frame_seconds", "first frame out"),
            ("first_commit_seconds", "first segment committed"),
        )
        if isinstance(startup.get(key), (int, float))
    ]
    return f"After the job started: {', '.join(firsts)} (marked)." if firsts else ""


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


@cache
def _environment() -> jinja2.Environment:
    """The templates of ``pipeline/templates`` (autoescaped: every value is text unless marked)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


@cache
def _static(name: str) -> Markup:
    """A static file of the templates folder (the page's CSS or script) to inline as is."""
    source, _, _ = _environment().loader.get_source(_environment(), name)  # type: ignore[union-attr]
    if re.search(r"</(script|style)", source, re.IGNORECASE):
        raise ValueError(f"{name} must not contain a closing script or style tag")
    return Markup(source)


def _number(value: object, digits: int = 0) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:,.{digits}f}"


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def _render_page(
    summary: Mapping[str, Any],
    run: JobRun,
    rows: Sequence[Mapping[str, Any]],
    row_data: Sequence[dict[str, Any]],
    links: Sequence[str],
) -> str:
    """The whole document."""
    name = str(summary.get("job") or "job")
    series = fps_over_time(summary)
    timeline = timeline_svg(summary)
    data = {
        "rows": list(row_data),
        "pageSize": PAGE_SIZE,
        "runId": run.run_id,
        "statusOrder": _STATUS_ORDER,
        "signalsNote": SIGNALS_NOTE,
    }
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            name=name,
            badge=job_badge(run, summary, rows),
            when=_when(run),
            banner=_banner(run, len(rows)),
            tiles=_tiles(summary, run, len(rows)),
            outputs=_outputs(summary),
            runs=_runs(summary, run),
            run_counts=RUN_COUNTS,
            provenance=_provenance(summary, rows),
            timeline=Markup(timeline) if timeline else None,  # timeline_svg escapes its texts
            timeline_note=_startup_marks(summary),
            fps=fps_chart(series),
            fps_source=series.source if series else None,
            links=links,
            built=_utc(datetime.now(timezone.utc)),
            data=data,
            css=_static("report.css"),
            script=_static("report.js"),
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.report <job folder>``: (re)build the report of a job."""
    parser = argparse.ArgumentParser(description="Write <job folder>/report.html.")
    parser.add_argument("job_folder", help="local folder or s3:// URI holding summary.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        write_report(args.job_folder, Storage(StorageConfig()))
    except (ReportError, StorageError) as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
