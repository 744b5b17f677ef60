"""job=validate: check a manifest without rendering — every row's problems, or OK, and the work.

Needs no GPU and loads no model: the CSV is parsed, every portrait, driving video and audio file
is opened and probed, and the frames to render are summed into an estimate of GPU time.

The verdict goes to stdout (logs to stderr): the rows ready to render with the work estimate,
then every problem (one compact block each, with the row's id, where, the problem and its fix),
then one line that sums it up. Exit code 0 when every row is valid, 1 when some row has a
problem, 2 when the manifest is unusable.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig
from rich.table import Table
from rich.text import Text

from pipeline.logs import show
from pipeline.manifest import ManifestError
from pipeline.storage import Storage
from pipeline.validate import RowMedia, Validation, validate_manifest

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
        strict=settings.job.strict_manifest,
    )
    if validation.ready:
        show(ready_table(validation.ready, manifest_uri, settings.framing.portrait))
    show(estimate_line(validation.ready, settings.job.estimate_fps))
    warnings = getattr(validation.manifest, "warnings", ()) or ()
    for warning in warnings:
        show(Text(f"warning: {warning}", style="yellow"))
    if validation.problems:
        show()
        show(ManifestError(validation.problems, uri=manifest_uri).problems_table())
    show()
    show(verdict_line(validation))
    if validation.structural:
        return 2
    return 1 if validation.failed_rows() else 0


def ready_table(ready: list[RowMedia], manifest_uri: str, job_framing: str) -> Table:
    """The rows that can be rendered, with what probing found."""
    table = Table(title=Text(f"Rows ready to render: {manifest_uri}"), title_justify="left")
    columns = ["row", "id", "frames", "fps", "seconds", "audio", "portrait", "face x,y,w,h"]
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("row", "frames", "fps", "seconds") else "left",
            no_wrap=column in ("portrait", "face x,y,w,h"),
            overflow="fold",
        )
    for media in ready:
        table.add_row(
            str(media.row.number),
            Text(media.row.id),  # Text: an id is shown verbatim, never as markup
            str(media.frames),
            f"{float(media.frame_rate):.4g}",
            f"{media.duration_seconds:.1f}",
            "yes" if media.has_audio else "no",
            f"{media.portrait_size[0]}x{media.portrait_size[1]}",
            ",".join(f"{v:.0f}" for v in media.face)
            if media.face is not None
            else f"({media.row.framing or job_framing})",
        )
    return table


def estimate_line(ready: list[RowMedia], estimate_fps: float) -> str:
    """The work of the rows that can be rendered, in frames and GPU-minutes."""
    frames = sum(media.frames for media in ready)
    gpu_minutes = frames / max(estimate_fps, 1e-9) / 60
    return (
        f"Work: {len(ready)} row(s), {frames} frames to render ≈ {gpu_minutes:.1f} GPU-minutes "
        f"at {estimate_fps:g} frames/s per GPU (job.estimate_fps)"
    )


def verdict_line(validation: Validation) -> Text:
    """One line that sums the validation up (what the exit code says)."""
    ok, bad = len(validation.ready), len(validation.failed_rows())
    if validation.structural:
        return Text(
            f"Verdict: the manifest cannot be used as it is (a problem of the whole file, above); "
            f"nothing renders until it is fixed. {ok} row(s) OK, {bad} with problems.",
            style="bold red",
        )
    if bad:
        return Text(
            f"Verdict: {ok} row(s) OK, {bad} with problems (above). job=render renders the OK "
            "rows and records the others as failed with these reasons.",
            style="bold yellow",
        )
    return Text(f"Verdict: {ok} row(s) OK, 0 with problems.", style="bold green")
