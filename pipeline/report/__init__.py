"""``report.html``: a job's results as one self-contained page a person would rather look at.

`write_report` reads ``summary.json`` (and, when present, ``status.json`` for when and how long
the job ran) from a job folder and writes ``report.html`` beside them. The page is rendered from
the Jinja2 templates in ``pipeline/templates/`` (autoescaped): a header with the job's state and
totals, the job's outputs as they stand beside this run's counts, the run history, provenance
(model, weights, preset, encoder, versions), the rows on the workers over time (a row split over
workers: a bar per part), the job's frames per second over time and the worker pool (who joined
late, who left and why). The rows themselves travel in the page as JSON (``|tojson``, safe
inside ``<script>``) and the page's script lays them out page by page with search, sort and a
status filter, so a 1,000-row job opens as fast as a 10-row one. Per row: the portrait (with the
face found and the square animated), the driving clip and the output side by side, the driving
clip following the output's playback; a contact sheet (click a frame to play from there); the
row's extra manifest columns; which run rendered it; a split row's parts (frames, worker, time,
speed of each); its identity and motion signals.

Images are JPEG files under ``report/`` next to the page (``report/<row>-poster.jpg``,
``report/<row>-sheet.jpg``, ``report/<row>-portrait.jpg``); videos and inputs are linked by their
path relative to the page, so the folder can be copied, served or synced as a whole (an input the
page cannot reach, e.g. on S3 beside a local job folder, gets a note instead). ``report/assets.json``
records what each image was made from (source URI and `Storage.fingerprint`): rebuilding the page
of an unchanged job decodes no video. ``python -m pipeline.report <job folder>`` rebuilds the
report of a job. Local and ``s3://`` job folders work alike (reads through `Storage.open`,
writes through `Storage.put`).

The modules, in the order a build uses them: `_build` (the entry points), `_summary` (the job
folder read back), `_asset_index` (``report/assets.json``), `_links` (where outputs and inputs
are, seen from the page), `_previews` (posters, contact sheets, portrait thumbnails: the only
decoding), `_frames` (picked frames, thumbnails, the contact sheet), `_rows` (a row as the page's
JSON), `_header` (badge, tiles, runs, provenance), `_workers` (the Workers panel), `_charts` (fps
over time, start-up marks), `_page` (the templates), `_values` (loose JSON values and the page's formats), `_cli` (``main``).
"""

from ._asset_index import ASSETS_FOLDER, ASSETS_INDEX
from ._build import REPORT_NAME, build_report, write_report
from ._cli import main
from ._frames import format_timestamp, pick_frame_indices
from ._links import asset_stem
from ._rows import SIGNALS_NOTE
from ._summary import ReportError, load_summary

__all__ = [
    "ASSETS_FOLDER",
    "ASSETS_INDEX",
    "REPORT_NAME",
    "SIGNALS_NOTE",
    "ReportError",
    "asset_stem",
    "build_report",
    "format_timestamp",
    "load_summary",
    "main",
    "pick_frame_indices",
    "write_report",
]
