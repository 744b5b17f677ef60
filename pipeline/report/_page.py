"""The page itself: the Jinja2 templates of ``pipeline/templates/`` (autoescaped) filled with the
job's header, charts and rows, the stylesheet and script inlined."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from ..timeline import fps_over_time, timeline_svg
from . import _header as header
from ._charts import fps_chart, startup_marks
from ._rows import SIGNALS_NOTE
from ._summary import STATUS_ORDER, JobRun
from ._values import format_utc
from ._workers import workers_panel

#: Rows per page of the row list (the reader can change it on the page).
PAGE_SIZE = 50


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


def render_page(
    summary: Mapping[str, Any],
    run: JobRun,
    rows: Sequence[Mapping[str, Any]],
    row_data: Sequence[dict[str, Any]],
    links: Sequence[str],
) -> str:
    """The whole document."""
    series = fps_over_time(summary)
    timeline = timeline_svg(summary)
    data = {
        "rows": list(row_data),
        "pageSize": PAGE_SIZE,
        "runId": run.run_id,
        "statusOrder": STATUS_ORDER,
        "signalsNote": SIGNALS_NOTE,
    }
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            name=str(summary.get("job") or "job"),
            badge=header.job_badge(run, summary, rows),
            when=header.when_it_ran(run),
            banner=header.unfinished_banner(run, len(rows)),
            tiles=header.tiles(summary, run, len(rows)),
            outputs=header.outputs(summary),
            runs=header.runs(summary, run),
            run_counts=header.RUN_COUNTS,
            provenance=header.provenance(summary, rows),
            workers=workers_panel(summary, run, rows),
            timeline=Markup(timeline) if timeline else None,  # timeline_svg escapes its texts
            timeline_note=startup_marks(summary),
            fps=fps_chart(series),
            fps_source=series.source if series else None,
            links=links,
            built=format_utc(datetime.now(timezone.utc)),
            data=data,
            css=_static("report.css"),
            script=_static("report.js"),
        )
    )
