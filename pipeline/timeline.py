"""A job over time: its rows on the workers' stream slots (data and an SVG picture) and its
frames per second.

Every rendered row in ``summary.json`` carries a timeline (Unix times: accepted by its worker,
streaming in a slot, first frame out, first segment committed, slot released, committed). This
module turns those into bars, one lane per worker slot, for ``report.html`` and the render
benchmark (``scripts/bench_render.sh``): a lane with gaps is a slot the batched denoising call ran
without; a row's light bar before its solid one is its preparation, after it its finish (last
segment, join, audio, commit), both off the GPU's path.

`fps_over_time` gives the job's rate over the run: from ``summary["throughput"]`` (cumulative
frames sampled while rendering) when the summary has it, else rebuilt from the rows' own spans
(each row's frames spread evenly over the time it emitted them).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Height of one lane of the picture and the room for its labels, in SVG units.
LANE_HEIGHT = 18
LABEL_WIDTH = 150
PLOT_WIDTH = 820
AXIS_HEIGHT = 30


@dataclass(frozen=True)
class Bar:
    """One row on one worker slot, in seconds since the job's time origin."""

    row_id: str
    worker: str
    slot: int
    status: str
    accepted: float  # taken by the worker (preparation begins)
    prepared: float  # ready for its first call (then waiting for a slot)
    streaming: float  # its slot taken: first denoising call
    released: float  # last frame out: slot free
    finished: float  # committed (or failed)
    frames: int

    def as_dict(self) -> dict[str, Any]:
        return {key: round(v, 3) if isinstance(v, float) else v for key, v in vars(self).items()}


def bars(summary: Mapping[str, Any]) -> list[Bar]:
    """The bars of every row that streamed, ordered by worker, slot and start; times in seconds
    after the job's start (``startup.started_at``; else the first row's acceptance)."""
    rows = [row for row in summary.get("rows") or [] if _streamed(row)]
    if not rows:
        return []
    startup = summary.get("startup") or {}
    origin = startup.get("started_at") or min(row["timeline"]["accepted_at"] for row in rows)
    found = []
    for row in rows:
        times = row["timeline"]
        streaming = times["streaming_at"]
        released = times.get("released_at", times.get("finished_at", streaming))
        found.append(
            Bar(
                row_id=str(row.get("row_id")),
                worker=str(row.get("worker") or "worker"),
                slot=int(times.get("slot") or 0),
                status=str(row.get("status")),
                accepted=times.get("accepted_at", streaming) - origin,
                prepared=times.get("prepared_at", streaming) - origin,
                streaming=streaming - origin,
                released=released - origin,
                finished=times.get("finished_at", released) - origin,
                frames=int(row.get("frames") or 0),
            )
        )
    return sorted(found, key=lambda bar: (bar.worker, bar.slot, bar.streaming))


def _streamed(row: Any) -> bool:
    times = row.get("timeline") if isinstance(row, Mapping) else None
    return isinstance(times, Mapping) and isinstance(times.get("streaming_at"), (int, float))


def slot_idle_seconds(found: Sequence[Bar]) -> dict[tuple[str, int], float]:
    """Per (worker, slot): seconds it stood empty between its first row's start and its last
    row's release (a slot the batched call ran without, while the job still had rows)."""
    lanes: dict[tuple[str, int], list[Bar]] = {}
    for bar in found:
        lanes.setdefault((bar.worker, bar.slot), []).append(bar)
    idle = {}
    for lane, lane_bars in lanes.items():
        lane_bars.sort(key=lambda bar: bar.streaming)
        idle[lane] = sum(
            max(0.0, later.streaming - earlier.released)
            for earlier, later in zip(lane_bars, lane_bars[1:])
        )
    return idle


def timeline_svg(summary: Mapping[str, Any]) -> str:
    """The picture: one lane per worker slot, a bar per row (solid while it streamed, light
    while it was prepared and finished), the job's first frame and first commit marked; "" when
    no row streamed."""
    found = bars(summary)
    if not found:
        return ""
    lanes = sorted({(bar.worker, bar.slot) for bar in found})
    end = max(bar.finished for bar in found)
    scale = PLOT_WIDTH / end if end > 0 else 1.0
    height = AXIS_HEIGHT + LANE_HEIGHT * len(lanes)
    parts = [
        f'<svg class="timeline" viewBox="0 0 {LABEL_WIDTH + PLOT_WIDTH + 10} {height}" '
        f'role="img" aria-label="rows on the workers\' stream slots over time">'
    ]
    for index, (worker, slot) in enumerate(lanes):
        top = AXIS_HEIGHT + index * LANE_HEIGHT
        parts.append(
            f'<text class="lane" x="{LABEL_WIDTH - 6}" y="{top + 13}" text-anchor="end">'
            f"{_e(worker)} · slot {slot}</text>"
            f'<line class="lane" x1="{LABEL_WIDTH}" x2="{LABEL_WIDTH + PLOT_WIDTH}" '
            f'y1="{top + LANE_HEIGHT - 0.5}" y2="{top + LANE_HEIGHT - 0.5}"/>'
        )
    for tick in _ticks(end):
        x = LABEL_WIDTH + tick * scale
        parts.append(
            f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{AXIS_HEIGHT - 4}" y2="{height}"/>'
            f'<text class="tick" x="{x:.1f}" y="{AXIS_HEIGHT - 8}" text-anchor="middle">'
            f"{tick:g} s</text>"
        )
    for bar in found:
        top = AXIS_HEIGHT + lanes.index((bar.worker, bar.slot)) * LANE_HEIGHT

        def x(seconds: float) -> float:
            return LABEL_WIDTH + seconds * scale

        title = (
            f"<title>{_e(bar.row_id)} ({_e(bar.status)}, {bar.frames} frames): accepted "
            f"{bar.accepted:.1f} s, prepared {bar.prepared:.1f} s, streaming {bar.streaming:.1f}–{bar.released:.1f} s, "
            f"committed {bar.finished:.1f} s</title>"
        )
        parts.append(
            f'<g class="bar st-{_e(bar.status)}">{title}'
            f'<rect class="prep" x="{x(bar.accepted):.1f}" y="{top + 12}" '
            f'width="{max(0.5, (bar.prepared - bar.accepted) * scale):.1f}" height="4"/>'
            f'<rect class="stream" x="{x(bar.streaming):.1f}" y="{top + 2}" '
            f'width="{max(0.5, (bar.released - bar.streaming) * scale - 1):.1f}" height="10"/>'
            f'<rect class="finish" x="{x(bar.released):.1f}" y="{top + 12}" '
            f'width="{max(0.5, (bar.finished - bar.released) * scale):.1f}" height="4"/></g>'
        )
    startup = summary.get("startup") or {}
    for key, label in (
        ("first_frame_seconds", "first frame"),
        ("first_commit_seconds", "first commit"),
    ):
        seconds = startup.get(key)
        if isinstance(seconds, (int, float)) and startup.get("started_at"):
            xm = LABEL_WIDTH + seconds * scale
            parts.append(
                f'<line class="mark" x1="{xm:.1f}" x2="{xm:.1f}" y1="{AXIS_HEIGHT}" '
                f'y2="{height}"><title>{label} {seconds:.1f} s after the job started</title></line>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(end: float) -> list[float]:
    """About 8 round tick positions from 0 to ``end`` seconds."""
    if end <= 0:
        return [0.0]
    step = next(
        (s for s in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600) if end / s <= 10),
        7200.0,
    )
    return [i * step for i in range(int(end // step) + 1)]


def nice_ticks(high: float, target: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``high`` (about `target` of them: 1, 2 or 5 x 10^n
    apart)."""
    if not math.isfinite(high) or high <= 0:
        return [0.0, 1.0]
    raw = high / max(1, target)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(high / step - 1e-9)
    return [round(i * step, 10) for i in range(count + 1)]


# --------------------------------------------------------------------------------------------
# Frames per second over time
# --------------------------------------------------------------------------------------------

#: Points of a derived fps curve (bins over the job's span).
FPS_BINS = 60


@dataclass(frozen=True)
class FpsSeries:
    """The job's rate over time: ``points`` (seconds since the start, frames/s in the moment)
    and ``mean`` (seconds, frames done so far / seconds); ``source`` says where it came from:
    "sampled" (``summary["throughput"]``) or "rows" (rebuilt from the rows' spans)."""

    points: list[tuple[float, float]]
    mean: list[tuple[float, float]]
    source: str


def fps_over_time(summary: Mapping[str, Any]) -> FpsSeries | None:
    """The job's frames per second over time; None when neither the throughput samples nor
    the rows say when frames came out."""
    sampled = _sampled(summary.get("throughput"))
    if sampled is not None:
        return sampled
    return _from_rows(summary)


def _sampled(throughput: object) -> FpsSeries | None:
    """From cumulative (t, frames) samples: the rate over a window of about five samples (one
    sample's rate jumps with every committed segment)."""
    if not isinstance(throughput, list):
        return None
    samples = sorted(
        (float(s["t"]), float(s["frames"]))
        for s in throughput
        if isinstance(s, Mapping) and _finite(s.get("t")) and _finite(s.get("frames"))
    )
    if len(samples) < 2:
        return None
    points, mean = [], []
    for i, (t, frames) in enumerate(samples):
        j = max(0, i - 4)
        t0, f0 = samples[j]
        if i == 0 or t <= t0:
            points.append((t, 0.0 if i == 0 else points[-1][1]))
        else:
            points.append((t, max(0.0, (frames - f0) / (t - t0))))
        mean.append((t, frames / t if t > 0 else 0.0))
    return FpsSeries(_rounded(points), _rounded(mean), "sampled")


def _from_rows(summary: Mapping[str, Any]) -> FpsSeries | None:
    """From the rows: each rendered row's frames spread evenly over the time it emitted them
    (first frame to slot release from its timeline; else its start plus its seconds)."""
    spans = []
    for row in summary.get("rows") or []:
        if not isinstance(row, Mapping):
            continue
        frames = row.get("frames")
        if not _finite(frames) or frames <= 0:
            continue
        times = row.get("timeline") if isinstance(row.get("timeline"), Mapping) else {}
        start = times.get("first_frame_at", times.get("streaming_at", row.get("started_at")))
        end = times.get("released_at")
        if not _finite(end) and _finite(row.get("started_at")) and _finite(row.get("seconds")):
            end = row["started_at"] + row["seconds"]
        if _finite(start) and _finite(end) and end > start:
            spans.append((float(start), float(end), float(frames)))
    if not spans:
        return None
    startup = summary.get("startup") if isinstance(summary.get("startup"), Mapping) else {}
    origin = startup.get("started_at") if _finite(startup.get("started_at")) else None
    origin = min(origin if origin is not None else math.inf, *(s for s, _, _ in spans))
    span = max(end for _, end, _ in spans) - origin
    width = max(span / FPS_BINS, 0.5)
    count = max(2, math.ceil(span / width))
    produced = [0.0] * count
    for start, end, frames in spans:
        rate = frames / (end - start)
        for index in range(
            int((start - origin) // width), min(count, int((end - origin) // width) + 1)
        ):
            low, high = origin + index * width, origin + (index + 1) * width
            produced[index] += rate * max(0.0, min(end, high) - max(start, low))
    points, mean, done = [], [], 0.0
    for index, frames in enumerate(produced):
        done += frames
        t = (index + 1) * width
        points.append(((index + 0.5) * width, frames / width))
        mean.append((t, done / t))
    return FpsSeries(_rounded(points), _rounded(mean), "rows")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rounded(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(round(t, 3), round(v, 3)) for t, v in points]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
