"""job=validate: check a manifest without rendering — every row's problems, or OK, and the work.

Needs no GPU and loads no model: the CSV is parsed, every portrait, driving video and audio file
is opened and probed, and the frames to render are summed into an estimate of GPU time.
Exit code 0 when every row is valid, 1 when some row has a problem, 2 when the manifest is unusable.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig
from rich.table import Table

from pipeline.logs import CONSOLE
from pipeline.manifest import ManifestError
from pipeline.storage import Storage
from pipeline.validate import validate_manifest

from ._common import require_manifest, typed

logger = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    settings = typed(cfg)
    manifest_uri = require_manifest(settings)
    validation = validate_manifest(
        manifest_uri,
        Storage(settings.storage),
        max_frames=settings.job.max_frames,
        allowed_input_roots=settings.storage.allowed_input_roots,
        framing=settings.framing,
    )
    if validation.problems:
        CONSOLE.print(ManifestError(validation.problems, uri=manifest_uri).problems_table())
    if validation.structural:
        return 2
    table = Table(title=f"Rows ready to render: {manifest_uri}")
    columns = ["row", "id", "frames", "fps", "seconds", "audio", "portrait", "face x,y,w,h"]
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("row", "frames", "fps", "seconds") else "left",
            no_wrap=column in ("portrait", "face x,y,w,h"),
            min_width=15 if column.startswith("face") else None,
        )
    for media in validation.ready:
        table.add_row(
            str(media.row.number),
            media.row.id,
            str(media.frames),
            f"{float(media.frame_rate):.4g}",
            f"{media.duration_seconds:.1f}",
            "yes" if media.has_audio else "no",
            f"{media.portrait_size[0]}x{media.portrait_size[1]}",
            ",".join(f"{v:.0f}" for v in media.face)
            if media.face is not None
            else f"({media.row.framing or settings.framing.portrait})",
        )
    CONSOLE.print(table)
    frames = sum(m.frames for m in validation.ready)
    gpu_minutes = frames / max(settings.job.estimate_fps, 1e-9) / 60
    bad = len(validation.failed_rows())
    CONSOLE.print(
        f"{len(validation.ready)} row(s) OK, {bad} with problems; {frames} frames to render ≈ "
        f"{gpu_minutes:.1f} GPU-minutes at {settings.job.estimate_fps:g} frames/s per GPU (job.estimate_fps)"
    )
    return 1 if bad else 0
