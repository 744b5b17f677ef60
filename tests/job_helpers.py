"""Shared by the job tests: manifests written as CSV, and the overrides of a small CPU render."""

from __future__ import annotations

import csv
from pathlib import Path


def write_manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV manifest with the union of the rows' keys as columns (sorted)."""
    columns = sorted({key for row in rows for key in row})
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_render_overrides(
    manifest: Path | str, output_root: Path | str, weights: Path, *extra: str
) -> list[str]:
    """Hydra overrides of a render job with the tiny model at 64x64 and plain progress lines."""
    return [
        "job=render",
        f"manifest={manifest}",
        "model=tiny",
        f"model.weights_dir={weights}",
        "model.random_init=false",
        "model.resolution=64",
        f"storage.output_root={output_root}",
        "job.progress=plain",
        "video.preset=ultrafast",
        *extra,
    ]
