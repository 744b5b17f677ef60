"""A job folder → its report: read the summary and status back, make (or reuse) each row's
pictures, render the page and write it beside ``summary.json``."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from ..storage import Storage, join
from ._asset_index import AssetIndex
from ._links import InputLinks, row_inputs
from ._page import render_page
from ._previews import portrait_view, row_preview
from ._rows import row_data
from ._summary import job_run, load_json, load_summary, rows_in_display_order

logger = logging.getLogger(__package__)

#: File name of the page inside the job folder.
REPORT_NAME = "report.html"


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
    rows = rows_in_display_order(document.get("rows") or [])
    run = job_run(document, load_json(join(job_folder_uri, "status.json"), storage))
    data = _rows_with_pictures(rows, job_folder_uri, storage)
    links = [
        name
        for name in ("summary.json", "status.json", "config.yaml")
        if storage.exists(join(job_folder_uri, name))
    ]
    return render_page(document, run, rows, data, links)


def _rows_with_pictures(
    rows: Sequence[Mapping[str, Any]], job_folder_uri: str, storage: Storage
) -> list[dict[str, Any]]:
    """Each row as the page's data, its pictures made or reused; the image index saved after."""
    assets = AssetIndex(job_folder_uri, storage)
    inputs = InputLinks(job_folder_uri, storage)
    data = []
    for row in rows:
        preview = row_preview(row, job_folder_uri, storage, assets)
        portrait = portrait_view(row, storage, assets, inputs)
        driving = inputs.link(row_inputs(row).get("driving_video"), "driving clip")
        data.append(row_data(row, preview, portrait, driving))
    assets.save()
    return data
