"""``report.html``: a job's results as one self-contained page a person would rather look at.

`write_report` reads ``summary.json`` (and, when present, ``status.json`` for when and how long
the job ran) from a job folder and writes ``report.html`` beside them: a header with the job's
totals, then one card per row with its status, the output video (playable, with a poster frame),
a contact sheet of frames spread evenly across it (click a frame to seek the video there),
timings, fps, attempts, worker and the full error text of failed rows.

Images are JPEG files under ``report/`` next to the page (``report/<row>-poster.jpg``,
``report/<row>-sheet.jpg``); videos are linked by their path relative to the page, so the folder
can be copied, served or synced as a whole. ``python -m pipeline.report <job folder>`` rebuilds
the report of a finished job (e.g. one rendered before reports existed). The page has inline CSS and a few lines of inline
JavaScript (seek on click, filter by status); no external URL. Every text from a row (ids,
errors, workers) is HTML-escaped.

Frames are decoded with `pipeline.media.VideoReader`, streaming: a short output is decoded once
keeping only the picked frames; a long one is read by seeking to each picked frame. Local and
``s3://`` job folders work alike (reads through `Storage.open`, writes through `Storage.put`).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import logging
import os
import posixpath
import re
import sys
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.config import StorageConfig
from pipeline.media import MediaSource, VideoReader, load_image
from pipeline.progress import ROW_STATUSES, format_duration
from pipeline.storage import NotFound, Storage, StorageError, is_s3, join
from pipeline.timeline import timeline_svg

__all__ = [
    "ASSETS_FOLDER",
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

#: Display order of the rows: problems first, then the rest in summary order.
_STATUS_ORDER = {"failed": 0, "quarantined": 1, "interrupted": 2, "done": 3, "skipped": 4}
_FAILURES = ("failed", "quarantined")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


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
    """A row's media as the page links it (URLs relative to ``report.html``)."""

    video_src: str | None = None  # None: the output is missing or not reachable from the page
    poster_src: str | None = None
    sheet_src: str | None = None
    times: tuple[float, ...] = ()  # presentation times of the contact-sheet frames, in order
    width: int | None = None
    height: int | None = None
    frame_rate: Fraction | None = None
    duration_seconds: float | None = None
    problem: str | None = None  # why there is no picture (missing output, unreadable video)
    portrait_src: str | None = None  # the portrait with the face and square framing found


@dataclass(frozen=True)
class JobRun:
    """When and how the job ran, from ``status.json`` (all None when there is none)."""

    state: str | None = None  # finished | failed | interrupted | running
    started_at: datetime | None = None
    finished_at: datetime | None = None
    wall_seconds: float | None = None
    total_rows: int | None = None  # rows the job set out to do


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
    logger.info("report: %s", uri)
    return uri


def build_report(
    job_folder_uri: str, storage: Storage, *, summary: Mapping[str, Any] | None = None
) -> str:
    """The HTML of a job's report; writes the page's JPEG images under ``report/`` as it goes.

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
    run = _job_run(_load_json(join(job_folder_uri, "status.json"), storage))
    previews = [
        replace(
            _row_preview(row, job_folder_uri, storage),
            portrait_src=_framed_portrait(row, job_folder_uri, storage),
        )
        for row in rows
    ]
    links = [
        name
        for name in ("summary.json", "status.json", "config.yaml")
        if storage.exists(join(job_folder_uri, name))
    ]
    return _page(document, run, list(zip(rows, previews)), links)


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


def _job_run(status: Mapping[str, Any] | None) -> JobRun:
    """`JobRun` from a ``status.json`` document (its end time and elapsed seconds)."""
    if not status:
        return JobRun()
    finished_at = _parse_time(status.get("updated_at"))
    wall = status.get("elapsed_seconds")
    wall = float(wall) if isinstance(wall, (int, float)) else None
    started_at = finished_at - timedelta(seconds=wall) if finished_at and wall else None
    rows = status.get("rows")
    total = rows.get("total") if isinstance(rows, dict) else None
    return JobRun(
        state=str(status.get("state") or "") or None,
        started_at=started_at,
        finished_at=finished_at,
        wall_seconds=wall,
        total_rows=total if isinstance(total, int) else None,
    )


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _rows_in_display_order(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Row dicts, failed and quarantined first (stable: summary order within a status)."""
    valid = [dict(row) for row in rows if isinstance(row, Mapping)]
    return sorted(valid, key=lambda row: _STATUS_ORDER.get(str(row.get("status")), 5))


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
# Rows: where their outputs are, and their previews
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
    if is_s3(target_uri) != is_s3(job_folder_uri):
        return None
    if is_s3(target_uri):
        bucket, _, key = target_uri[len("s3://") :].partition("/")
        folder_bucket, _, folder_key = job_folder_uri[len("s3://") :].partition("/")
        if bucket != folder_bucket:
            return None
        relative = posixpath.relpath("/" + key, "/" + folder_key.rstrip("/") or "/")
    else:
        target, folder = storage.local_path(target_uri), storage.local_path(job_folder_uri)
        assert target is not None and folder is not None  # both local
        relative = os.path.relpath(target, folder).replace(os.sep, "/")
    return urllib.parse.quote(relative, safe="/")


@contextmanager
def _media_source(uri: str, storage: Storage) -> Iterator[MediaSource]:
    """A local path as is; an S3 object as a seekable stream (closed afterwards)."""
    local = storage.local_path(uri)
    if local is not None:
        yield local
        return
    with storage.open(uri) as stream:
        yield stream


def _row_preview(row: Mapping[str, Any], job_folder_uri: str, storage: Storage) -> Preview:
    """Find the row's output, write its poster and contact sheet, and say how to link them."""
    output = row.get("output")
    if not output:
        return Preview()
    uri = _output_uri(str(output), job_folder_uri, storage)
    if uri is None:
        return Preview(problem=f"the output {output} does not exist (moved or deleted?)")
    video_src = _relative_url(uri, job_folder_uri, storage)
    try:
        with _media_source(uri, storage) as source:
            reader = VideoReader(source)
            thumbnails = _grab_thumbnails(source, reader, pick_frame_indices(reader.num_frames))
            info = reader.info.video
    except (ValueError, OSError, StorageError) as err:  # MediaError is a ValueError
        logger.warning("report: no preview of %s: %s", uri, err)
        return Preview(video_src=video_src, problem=f"no preview: {err}")
    if not thumbnails:
        return Preview(video_src=video_src, problem="the output has no frame")
    stem = asset_stem(str(row.get("row_id", "")))
    poster = thumbnails[len(thumbnails) // 2].image
    poster_name, sheet_name = f"{stem}-poster.jpg", f"{stem}-sheet.jpg"
    storage.put(_jpeg(poster), join(job_folder_uri, ASSETS_FOLDER, poster_name))
    storage.put(_jpeg(contact_sheet(thumbnails)), join(job_folder_uri, ASSETS_FOLDER, sheet_name))
    assert info is not None  # VideoReader only opens videos
    return Preview(
        video_src=video_src,
        poster_src=f"{ASSETS_FOLDER}/{urllib.parse.quote(poster_name)}",
        sheet_src=f"{ASSETS_FOLDER}/{urllib.parse.quote(sheet_name)}",
        times=tuple(t.pts_seconds for t in thumbnails),
        width=info.width,
        height=info.height,
        frame_rate=info.frame_rate,
        duration_seconds=reader.num_frames / float(info.frame_rate),
    )


#: width of the framed-portrait thumbnail
PORTRAIT_THUMB_WIDTH = 200


def _framed_portrait(row: Mapping[str, Any], job_folder_uri: str, storage: Storage) -> str | None:
    """A thumbnail of the row's portrait with the face found (green) and the square animated
    (white) drawn on it; None without face framing or when the portrait cannot be read."""
    framing = row.get("framing") or {}
    face, square, uri = framing.get("face"), framing.get("square"), framing.get("portrait_uri")
    if not (face and square and uri):
        return None
    try:
        with _media_source(str(uri), storage) as source:
            photo = Image.fromarray(load_image(source))
    except (ValueError, OSError, StorageError) as err:
        logger.warning("report: no portrait thumbnail of %s: %s", uri, err)
        return None
    factor = PORTRAIT_THUMB_WIDTH / photo.width
    thumb = photo.resize(
        (PORTRAIT_THUMB_WIDTH, max(1, round(photo.height * factor))), Image.Resampling.LANCZOS
    )
    draw = ImageDraw.Draw(thumb)
    x, y, side = (v * factor for v in square)
    draw.rectangle([x, y, x + side, y + side], outline=(255, 255, 255), width=2)
    fx, fy, fw, fh = (v * factor for v in face)
    draw.rectangle([fx, fy, fx + fw, fy + fh], outline=(34, 197, 94), width=2)
    name = f"{asset_stem(str(row.get('row_id', '')))}-portrait.jpg"
    storage.put(_jpeg(thumb), join(job_folder_uri, ASSETS_FOLDER, name))
    return f"{ASSETS_FOLDER}/{urllib.parse.quote(name)}"


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """HTML-escape any value's text (quotes too: safe in attributes)."""
    return html.escape(str(value), quote=True)


def _number(value: object, digits: int = 0) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value:,.{digits}f}"


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


def _page(
    summary: Mapping[str, Any],
    run: JobRun,
    cards: Sequence[tuple[Mapping[str, Any], Preview]],
    links: Sequence[str],
) -> str:
    """The whole document."""
    name = str(summary.get("job") or "job")
    body = "\n".join(_card(row, preview) for row, preview in cards)
    if not cards:
        body = '<p class="empty">This job has no rows.</p>'
    footer_links = " · ".join(f'<a href="{_e(link)}">{_e(link)}</a>' for link in links)
    built = _utc(datetime.now(timezone.utc))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(name)} · portrait-render report</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style>
</head>
<body>
{_header(name, summary, run, len(cards))}
{_timeline(summary)}
<main class="grid">
{body}
</main>
<footer>Built {_e(built)} by portrait-render{" · " if footer_links else ""}{footer_links}</footer>
<script>{_JS}</script>
</body>
</html>
"""


def _header(name: str, summary: Mapping[str, Any], run: JobRun, rows: int) -> str:
    """Job name, when it ran, the totals as tiles (status tiles filter the cards)."""
    totals = summary.get("totals") or {}
    when = ""
    if run.started_at and run.finished_at:
        when = f"Ran {_utc(run.started_at)} → {run.finished_at.strftime('%H:%M:%S')} UTC"
    elif run.finished_at:
        when = f"Last update {_utc(run.finished_at)}"
    state = run.state or "finished"
    tiles = [f'<button class="tile" data-filter="all"><b>{rows}</b><span>rows</span></button>']
    for status in ROW_STATUSES:
        count = totals.get(status, 0) or 0
        muted = "" if count else " muted"
        tiles.append(
            f'<button class="tile st-{status}{muted}" data-filter="{status}">'
            f"<b>{_number(count)}</b><span>{status}</span></button>"
        )
    stats = [
        (_number(totals.get("frames")), "frames"),
        (format_duration(run.wall_seconds) if run.wall_seconds is not None else "–", "wall time"),
        (format_duration(totals.get("row_seconds")), "row time"),
        # the job's rate (rows overlapping on several workers count once); older summaries and
        # jobs with no rendered row have only the mean rate per row
        (_number(totals.get("aggregate_fps", totals.get("fps")), 1), "frames/s"),
    ]
    tiles += [
        f'<div class="tile stat"><b>{_e(v)}</b><span>{label}</span></div>' for v, label in stats
    ]
    return f"""<header class="top">
<div class="title"><h1>{_e(name)}</h1><span class="pill state-{_e(state)}">{_e(state)}</span></div>
<p class="when">{_e(when)}</p>
{_partial_banner(run, rows)}
<div class="tiles">{"".join(tiles)}</div>
</header>"""


def _timeline(summary: Mapping[str, Any]) -> str:
    """The rows on the workers' stream slots over time (nothing when no row streamed)."""
    picture = timeline_svg(summary)
    if not picture:
        return ""
    startup = summary.get("startup") or {}
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
    after = f" After the job started: {', '.join(firsts)} (marked)." if firsts else ""
    return f"""<section class="timeline-box">
<h2>Rows on the workers over time</h2>
<p class="legend"><span class="key stream"></span> streaming in a slot (its denoising calls)
<span class="key prep"></span> prepared, then finished (off the GPU's path).{_e(after)}</p>
{picture}
</section>"""


def _partial_banner(run: JobRun, rows: int) -> str:
    """A note when the job is still running or stopped before every row had a result."""
    missing = (run.total_rows or 0) - rows
    if run.state in (None, "finished", "failed") and missing <= 0:
        return ""
    what = "is still running" if run.state == "running" else f"was {run.state or 'stopped'}"
    detail = f": {missing} of {run.total_rows} rows have no result yet" if missing > 0 else ""
    return f'<p class="banner">This job {_e(what)}{_e(detail)}. The report shows the rows finished so far.</p>'


def _card(row: Mapping[str, Any], preview: Preview) -> str:
    """One row: id and status, media (or the error in their place), figures, error text."""
    row_id = str(row.get("row_id", ""))
    status = str(row.get("status", "unknown"))
    status_class = status if status in ROW_STATUSES else "unknown"
    has_media = preview.video_src is not None or preview.sheet_src is not None
    if has_media:
        media = _media(row_id, preview) + _note(preview.problem)
        text = _error_text(status, row.get("error"), box="error")
    elif status in _FAILURES and row.get("error"):
        media, text = _error_text(status, row.get("error"), box="media-error"), ""
    else:
        media = f'<div class="media-none">{_e(preview.problem or "no output video")}</div>'
        text = _error_text(status, row.get("error"), box="error")
    return f"""<article class="card st-{status_class}" data-status="{_e(status_class)}" id="row-{_e(asset_stem(row_id))}">
<div class="card-head"><h2 title="{_e(row_id)}">{_e(row_id)}</h2><span class="pill st-{status_class}">{_e(status)}</span></div>
{media}
{_stats(row, preview)}
{text}
</article>"""


def _note(text: str | None) -> str:
    return f'<p class="note">{_e(text)}</p>' if text else ""


def _error_text(status: str, error: object, *, box: str) -> str:
    """The row's full error text (failed, quarantined), or why it was skipped; escaped."""
    if not error:
        return ""
    if status not in _FAILURES:
        return f'<div class="reason"><b>Note</b><pre>{_e(error)}</pre></div>'
    title = "No output" if box == "media-error" else "Error"
    return f'<div class="{box}"><b>{title}</b><pre>{_e(error)}</pre></div>'


def _media(row_id: str, preview: Preview) -> str:
    """The playable video (poster frame shown before playing) and the clickable contact sheet."""
    parts: list[str] = []
    if preview.portrait_src is not None:
        parts.append(
            f'<figure class="portrait"><img src="{_e(preview.portrait_src)}" loading="lazy" '
            f'alt="portrait of {_e(row_id)} with the face found">'
            "<figcaption>portrait: face found (green), square animated (white)</figcaption>"
            "</figure>"
        )
    if preview.video_src is not None:
        poster = f' poster="{_e(preview.poster_src)}"' if preview.poster_src else ""
        size = (
            f' width="{preview.width}" height="{preview.height}"'
            if preview.width and preview.height
            else ""
        )
        parts.append(
            f'<video controls preload="metadata"{poster}{size} src="{_e(preview.video_src)}">'
            f'<a href="{_e(preview.video_src)}">{_e(row_id)}</a></video>'
        )
    if preview.sheet_src is not None:
        columns = min(SHEET_COLUMNS, len(preview.times)) or 1
        digits = timestamp_digits(preview.times)
        labels = [format_timestamp(t, digits) for t in preview.times]
        buttons = "".join(
            f'<button type="button" data-t="{t:.3f}" title="play from {label}">'
            f'<span class="sr">{label}</span></button>'
            for t, label in zip(preview.times, labels)
        )
        parts.append(
            f'<figure class="sheet"><img src="{_e(preview.sheet_src)}" loading="lazy" '
            f'alt="{len(preview.times)} frames of {_e(row_id)}">'
            f'<div class="cells" style="--cols:{columns}">{buttons}</div>'
            f"<figcaption>{len(preview.times)} frames across the video · click one to play from there"
            "</figcaption></figure>"
        )
    return f'<div class="media">{"".join(parts)}</div>'


def _stats(row: Mapping[str, Any], preview: Preview) -> str:
    """Frames, time, fps and attempts as figures; worker and the video's format as a line."""
    items = [
        ("frames", _number(row.get("frames"))),
        ("time", f"{_number(row.get('seconds'), 1)} s"),
        ("speed", f"{_number(row.get('fps'), 1)} fps"),
        ("attempts", _number(row.get("attempts"))),
    ]
    cells = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in items)
    meta = [f"worker {row.get('worker')}" if row.get("worker") else "no worker"]
    if preview.width and preview.height:
        meta.append(f"{preview.width}×{preview.height}")
    if preview.frame_rate is not None:
        meta.append(f"{float(preview.frame_rate):.4g} fps")
    if preview.duration_seconds is not None:
        meta.append(f"{preview.duration_seconds:.1f} s")
    framing = row.get("framing") or {}
    lost = framing.get("driving_frames_without_face")
    if lost:
        meta.append(f"{lost} driving frame(s) without a face: cut whole")
    return f'<dl class="stats">{cells}</dl><p class="meta">{_e(" · ".join(meta))}</p>'


_CSS = """
:root{--bg:#f3f4f6;--card:#fff;--ink:#111827;--muted:#6b7280;--line:#e5e7eb;
--done:#15803d;--done-bg:#dcfce7;--failed:#b91c1c;--failed-bg:#fee2e2;
--skipped:#4b5563;--skipped-bg:#e5e7eb;--quarantined:#a16207;--quarantined-bg:#fef3c7;
--interrupted:#c2410c;--interrupted-bg:#ffedd5;
--unknown:#6b7280;--unknown-bg:#f3f4f6;--head:#111827;--head-ink:#f9fafb}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.top{background:var(--head);color:var(--head-ink);padding:28px clamp(16px,4vw,48px) 24px}
.title{display:flex;align-items:center;gap:14px;flex-wrap:wrap}
h1{margin:0;font-size:clamp(22px,3vw,32px);font-weight:700;letter-spacing:-.01em;
overflow-wrap:anywhere}
.when{margin:6px 0 18px;color:#9ca3af;font-size:14px}
.banner{background:#fef3c7;color:#78350f;border-radius:8px;padding:10px 14px;margin:0 0 16px}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(104px,1fr));gap:10px}
.tile{background:#1f2937;color:inherit;border:1px solid #374151;border-radius:10px;
padding:10px 12px;text-align:left;font:inherit;display:flex;flex-direction:column}
button.tile{cursor:pointer}button.tile:hover,button.tile.on{border-color:#9ca3af}
.tile b{font-size:22px;font-variant-numeric:tabular-nums;line-height:1.2}
.tile span{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#9ca3af}
.tile.st-done b{color:#4ade80}.tile.st-failed b{color:#f87171}
.tile.st-quarantined b{color:#fbbf24}.tile.st-skipped b{color:#d1d5db}
.tile.st-interrupted b{color:#fb923c}
.tile.muted b{color:#6b7280}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,380px),1fr));
gap:20px;padding:24px clamp(16px,4vw,48px);max-width:1800px;margin:0 auto;align-items:start}
.card{background:var(--card);border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.08),
0 4px 16px rgba(0,0,0,.04);overflow:hidden;border-top:4px solid var(--unknown);
display:flex;flex-direction:column}
.card[hidden]{display:none}
.card.st-done{border-top-color:var(--done)}.card.st-failed{border-top-color:var(--failed)}
.card.st-skipped{border-top-color:var(--skipped)}
.card.st-quarantined{border-top-color:var(--quarantined)}
.card.st-interrupted{border-top-color:var(--interrupted)}
.card-head{display:flex;align-items:center;justify-content:space-between;gap:10px;
padding:12px 16px}
h2{margin:0;font:600 15px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
overflow-wrap:anywhere}
.pill{flex:none;border-radius:999px;padding:2px 10px;font-size:12px;font-weight:600;
text-transform:uppercase;letter-spacing:.05em;background:var(--unknown-bg);color:var(--unknown)}
.pill.st-done{background:var(--done-bg);color:var(--done)}
.pill.st-failed{background:var(--failed-bg);color:var(--failed)}
.pill.st-skipped{background:var(--skipped-bg);color:var(--skipped)}
.pill.st-quarantined{background:var(--quarantined-bg);color:var(--quarantined)}
.pill.st-interrupted{background:var(--interrupted-bg);color:var(--interrupted)}
.pill.state-finished{background:#166534;color:#dcfce7}
.pill.state-failed,.pill.state-interrupted{background:#991b1b;color:#fee2e2}
.pill.state-running{background:#1e40af;color:#dbeafe}
.media{background:#0b0f19}
video{display:block;width:100%;height:auto;max-height:70vh;object-fit:contain;background:#000}
.portrait{margin:0;padding:8px 16px;display:flex;gap:10px;align-items:flex-end;background:#fafafa}
.portrait img{width:100px;height:auto;border-radius:4px}
.portrait figcaption{font-size:12px;color:var(--muted)}
.sheet{position:relative;margin:0;border-top:1px solid #000}
.sheet img{display:block;width:100%;height:auto}
.cells{position:absolute;top:0;left:0;right:0;bottom:28px;display:grid;
grid-template-columns:repeat(var(--cols),1fr);grid-auto-rows:1fr}
.cells button{all:unset;cursor:pointer}
.cells button:hover,.cells button:focus-visible{outline:2px solid #60a5fa;outline-offset:-2px}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
figcaption{color:#9ca3af;font-size:12px;padding:6px 12px;height:28px;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
.media-error{margin:0 16px;padding:14px 16px;border-radius:10px;background:var(--failed-bg);
color:var(--failed);border:1px solid #fca5a5}
.media-error b{font-size:16px}
.media-none{margin:0 16px;padding:28px 16px;border-radius:10px;background:var(--bg);
color:var(--muted);text-align:center}
pre{margin:8px 0 0;white-space:pre-wrap;overflow-wrap:anywhere;max-height:22em;overflow:auto;
font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;
color:#7f1d1d}
.stats{display:grid;grid-template-columns:repeat(4,1fr);gap:8px 12px;margin:0;
padding:14px 16px 4px}
.stats div{min-width:0}
dt{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.error{margin:0 16px 16px;padding:10px 14px;border-left:4px solid var(--failed);
background:var(--failed-bg);border-radius:6px;color:var(--failed)}
.note{margin:8px 16px 0;color:var(--muted);font-size:13px}
.reason{margin:0 16px 16px;padding:10px 14px;border-left:4px solid var(--skipped);
background:var(--bg);border-radius:6px;color:var(--muted)}
.reason pre{color:inherit}
.meta{margin:0;padding:0 16px 14px;color:var(--muted);font-size:13px;overflow-wrap:anywhere}
.timeline-box{background:var(--card);margin:24px clamp(16px,4vw,48px) 0;padding:14px 16px;
border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.legend{margin:4px 0 8px;color:var(--muted);font-size:13px}
.key{display:inline-block;width:14px;height:8px;margin:0 4px 0 10px;border-radius:2px}
.key.stream{background:#2563eb}.key.prep{background:#93c5fd}
svg.timeline{width:100%;height:auto;font:10px system-ui,sans-serif}
svg.timeline text{fill:var(--muted)}svg.timeline line.lane{stroke:var(--line)}
svg.timeline line.tick{stroke:var(--line);stroke-dasharray:2 3}
svg.timeline line.mark{stroke:#16a34a;stroke-width:1.5}
svg.timeline .stream{fill:#2563eb}svg.timeline .prep,svg.timeline .finish{fill:#93c5fd}
svg.timeline .st-failed .stream{fill:var(--failed)}
svg.timeline .st-interrupted .stream{fill:var(--interrupted)}
.empty{color:var(--muted)}
footer{color:var(--muted);font-size:13px;text-align:center;padding:8px 16px 32px}
footer a{color:inherit}
@media (prefers-color-scheme:dark){:root{--bg:#0b0f19;--card:#161b26;--ink:#e5e7eb;
--line:#273042;--done-bg:#052e16;--failed-bg:#450a0a;--skipped-bg:#1f2937;
--quarantined-bg:#422006;--done:#4ade80;--failed:#f87171;--quarantined:#fbbf24;
--interrupted-bg:#431407;--interrupted:#fb923c;
--skipped:#d1d5db}pre{color:#fecaca}.media-error{border-color:#7f1d1d}}
"""

_JS = """
document.querySelectorAll(".cells button[data-t]").forEach(function (button) {
  button.addEventListener("click", function () {
    var video = button.closest(".card").querySelector("video");
    if (!video) return;
    video.currentTime = parseFloat(button.dataset.t);
    var playing = video.play();
    if (playing && playing.catch) playing.catch(function () {});
  });
});
document.querySelectorAll(".tile[data-filter]").forEach(function (tile) {
  tile.addEventListener("click", function () {
    var wanted = tile.dataset.filter;
    document.querySelectorAll(".tile[data-filter]").forEach(function (other) {
      other.classList.toggle("on", other === tile && wanted !== "all");
    });
    document.querySelectorAll(".card").forEach(function (card) {
      card.hidden = wanted !== "all" && card.dataset.status !== wanted;
    });
  });
});
"""


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipeline.report <job folder>``: (re)build the report of a finished job."""
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
