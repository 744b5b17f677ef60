"""A row's pictures: its output's poster and contact sheet, and its portrait's thumbnail with the
face and the animated square drawn on it. Each is decoded once and then reused while
``report/assets.json`` says its source is unchanged; rows sharing a source share its pictures."""

from __future__ import annotations

import json
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from PIL import Image, ImageDraw

from ..media import MediaSource, VideoReader, load_image
from ..storage import Storage, StorageError
from ._asset_index import ASSETS_FOLDER, AssetIndex, source_fingerprint
from ._frames import Thumbnail, contact_sheet, jpeg, pick_frame_indices, thumbnail
from ._links import InputLinks, InputView, asset_stem, output_uri, relative_url, row_inputs
from ._values import as_mapping

logger = logging.getLogger(__package__)

#: Outputs up to this many frames are decoded once; longer ones are read by seeking per frame.
DECODE_ALL_MAX_FRAMES = 1000
#: Width of the portrait thumbnail (with the face and square drawn on it).
PORTRAIT_THUMB_WIDTH = 200


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


def row_preview(
    row: Mapping[str, Any], job_folder_uri: str, storage: Storage, assets: AssetIndex
) -> Preview:
    """Find the row's output, make (or reuse) its poster and contact sheet, say how to link them."""
    output = row.get("output")
    if not output:
        return Preview()
    uri = output_uri(str(output), job_folder_uri, storage)
    if uri is None:
        return Preview(problem=f"the output {output} does not exist (moved or deleted?)")
    video_src = relative_url(uri, job_folder_uri, storage)
    if uri in assets.made:  # another row of this job shows the same video: same pictures
        return assets.made[uri]
    preview = _make_preview(row, uri, video_src, storage, assets)
    assets.made[uri] = preview
    return preview


def replace_src(preview: Preview, video_src: str | None) -> Preview:
    """`preview` linking the output at `video_src`."""
    return Preview(**{**asdict(preview), "video_src": video_src})


def _make_preview(
    row: Mapping[str, Any], uri: str, video_src: str | None, storage: Storage, assets: AssetIndex
) -> Preview:
    """The poster and contact sheet of the output at `uri`: reused from ``report/`` when
    ``assets.json`` says they were made from this very file, else decoded and written."""
    stem = asset_stem(str(row.get("row_id", "")))
    key, fingerprint = f"output:{stem}", source_fingerprint(uri, storage)
    cached = assets.lookup(key, uri, fingerprint)
    if cached is not None:
        data = dict(cached["data"])
        data["times"] = tuple(data.get("times") or ())
        return Preview(video_src=video_src, **data)
    preview, files = _decode_preview(uri, stem, storage)
    if preview.problem:  # remembered too: an unreadable output is not decoded again either
        data = {"problem": preview.problem}
    else:
        data = {k: v for k, v in asdict(preview).items() if k != "video_src"}
    assets.store(key, uri, fingerprint, files, data)
    return replace_src(preview, video_src)


def _decode_preview(uri: str, stem: str, storage: Storage) -> tuple[Preview, dict[str, bytes]]:
    """The output at `uri` decoded: its preview and image files (poster and contact sheet named
    after `stem`), or a preview saying why there is no picture and no files."""
    try:
        with storage.open_input(uri) as source:
            reader = VideoReader(source)
            thumbnails = _grab_thumbnails(source, reader, pick_frame_indices(reader.num_frames))
            info = reader.info.video
    except (ValueError, OSError, StorageError) as err:  # MediaError is a ValueError
        logger.warning("report: no preview of %s: %s", uri, err)
        return Preview(problem=f"no preview: {err}"), {}
    if not thumbnails:
        return Preview(problem="the output has no frame"), {}
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
        poster_name: jpeg(thumbnails[len(thumbnails) // 2].image),
        sheet_name: jpeg(contact_sheet(thumbnails)),
    }
    return preview, files


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
                picked.append(Thumbnail(index, float(index / rate), thumbnail(frame)))
                if len(picked) == len(wanted):
                    break
        return picked
    for index in indices:
        one = VideoReader(source, start_frame=index, max_frames=index + 1)
        for frame in one:
            picked.append(Thumbnail(index, float(index / rate), thumbnail(frame)))
    return picked


def portrait_view(
    row: Mapping[str, Any], storage: Storage, assets: AssetIndex, links: InputLinks
) -> InputView:
    """The row's portrait: a thumbnail (with the face found, green, and the square animated,
    white, when framing found them) and a link to the photo itself."""
    framing = as_mapping(row.get("framing"))
    uri = row_inputs(row).get("portrait") or framing.get("portrait_uri")
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
    key, fingerprint = f"portrait:{stem}", source_fingerprint(uri, storage)
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
        thumb = jpeg(_framed_thumbnail(photo, boxes))
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
