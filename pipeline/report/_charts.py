"""The job's charts as geometry for the templates: frames per second over time as a line chart,
and the start-up moments the timeline marks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..timeline import FpsSeries, nice_ticks
from ._values import as_mapping


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


def startup_marks(summary: Mapping[str, Any]) -> str:
    """The note under the timeline: when Ray, the workers, the first frame and the first
    committed segment were ready, after the job started (empty when the summary does not say)."""
    startup = as_mapping(summary.get("startup"))
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
