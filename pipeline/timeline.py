"""A job over time: its rows on the workers' stream slots (data and an SVG picture) and its
frames per second.

Every rendered row in ``summary.json`` carries a timeline (Unix times: accepted by its worker,
streaming in a slot, first frame out, first segment committed, slot released, committed). This
module turns those into bars, one lane per worker slot, for ``report.html`` and the render
benchmark (``scripts/bench_render.sh``): a lane with gaps is a slot the batched denoising call ran
without; a row's light bar before its solid one is its preparation, after it its finish (last
segment, join, audio, commit), both off the GPU's path. A row split over workers
(``pipeline/split_rows.py``: its ``parts``, each with its own worker and timeline) is a bar per
part, on the lane of the worker and slot that rendered that part, labelled "<row> 2/3".

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
#: About how wide one character of a part's label on its bar is (the label is cut to fit).
PART_LABEL_CHAR_WIDTH = 4.6


@dataclass(frozen=True)
class Bar:
    """One row (or one part of a split row) on one worker slot, in seconds since the job's time
    origin."""

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
    part: int | None = None  # which part of a split row, from 1 (None: the whole row)
    parts: int | None = None  # how many parts the row was split into
    start: int | None = None  # the part's first output frame of the row
    end: int | None = None  # the part's end (exclusive)

    @property
    def label(self) -> str:
        """The row's id, with the part for a part ("talk 2/3")."""
        return self.row_id if self.part is None else f"{self.row_id} {self.part}/{self.parts}"

    def as_dict(self) -> dict[str, Any]:
        return {key: round(v, 3) if isinstance(v, float) else v for key, v in vars(self).items()}


@dataclass(frozen=True)
class _Span:
    """What one bar is drawn from: a row's (or a part's) timeline and who rendered it."""

    row_id: str
    worker: str
    status: str
    frames: int
    times: Mapping[str, Any]
    part: int | None = None
    parts: int | None = None
    start: int | None = None
    end: int | None = None


def bars(summary: Mapping[str, Any]) -> list[Bar]:
    """The bars of every row that streamed (of each part that streamed, for a split row),
    ordered by worker, slot and start; times in seconds after the job's start
    (``startup.started_at``; else the first acceptance)."""
    spans = [span for row in summary.get("rows") or [] for span in _spans(row)]
    if not spans:
        return []
    startup = summary.get("startup") or {}
    origin = startup.get("started_at") or min(
        span.times.get("accepted_at", span.times["streaming_at"]) for span in spans
    )
    found = []
    for span in spans:
        times = span.times
        streaming = times["streaming_at"]
        released = times.get("released_at", times.get("finished_at", streaming))
        found.append(
            Bar(
                row_id=span.row_id,
                worker=span.worker,
                slot=int(times.get("slot") or 0),
                status=span.status,
                accepted=times.get("accepted_at", streaming) - origin,
                prepared=times.get("prepared_at", streaming) - origin,
                streaming=streaming - origin,
                released=released - origin,
                finished=times.get("finished_at", released) - origin,
                frames=span.frames,
                part=span.part,
                parts=span.parts,
                start=span.start,
                end=span.end,
            )
        )
    return sorted(found, key=lambda bar: (bar.worker, bar.slot, bar.streaming))


def _spans(row: Any) -> list[_Span]:
    """A row's bars-to-be: one per part that streamed for a split row, else the row itself
    (when it streamed)."""
    if not isinstance(row, Mapping):
        return []
    row_id = str(row.get("row_id"))
    parts = [part for part in row.get("parts") or [] if isinstance(part, Mapping)]
    streamed = [(index, part) for index, part in enumerate(parts) if _streamed(part)]
    if streamed:
        return [
            _span_of(
                row_id,
                part,
                part=_part_number(part, index),
                parts=len(parts),
                start=_int_or_none(part.get("start")),
                end=_int_or_none(part.get("end")),
            )  # fmt: skip
            for index, part in streamed
        ]
    if not _streamed(row):  # (a split row whose parts have no timeline: its own, spanning them)
        return []
    return [_span_of(row_id, row)]


def _span_of(row_id: str, entry: Mapping[str, Any], **part: Any) -> _Span:
    """The bar of a row (or of one part of it: ``part``, ``parts``, ``start``, ``end``)."""
    return _Span(
        row_id=row_id, worker=str(entry.get("worker") or "worker"),
        status=str(entry.get("status")), frames=int(entry.get("frames") or 0),
        times=entry["timeline"], **part,
    )  # fmt: skip


def _part_number(part: Mapping[str, Any], index: int) -> int:
    """The part's number from 1 (summary.json's ``part`` counts from 0; its place if missing)."""
    number = _int_or_none(part.get("part"))
    return (number if number is not None else index) + 1


def _int_or_none(value: object) -> int | None:
    return int(value) if _finite(value) else None


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

        stream_width = max(0.5, (bar.released - bar.streaming) * scale - 1)
        parts.append(
            f'<g class="bar st-{_e(bar.status)}"{_part_attribute(bar)}>{_bar_title(bar)}'
            f'<rect class="prep" x="{x(bar.accepted):.1f}" y="{top + 12}" '
            f'width="{max(0.5, (bar.prepared - bar.accepted) * scale):.1f}" height="4"/>'
            f'<rect class="stream" x="{x(bar.streaming):.1f}" y="{top + 2}" '
            f'width="{stream_width:.1f}" height="10"/>'
            f'<rect class="finish" x="{x(bar.released):.1f}" y="{top + 12}" '
            f'width="{max(0.5, (bar.finished - bar.released) * scale):.1f}" height="4"/>'
            f"{_part_label(bar, x(bar.streaming), top, stream_width)}</g>"
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


def _bar_title(bar: Bar) -> str:
    """The bar's tooltip: what it is (a part: which frames of the row) and when it got where."""
    frames = f"{bar.frames} frames"
    if bar.part is not None and bar.start is not None and bar.end is not None:
        frames += f": the row's {bar.start}–{bar.end - 1}"
    return (
        f"<title>{_e(bar.label)} ({_e(bar.status)}, {frames}): accepted "
        f"{bar.accepted:.1f} s, prepared {bar.prepared:.1f} s, streaming {bar.streaming:.1f}–{bar.released:.1f} s, "
        f"committed {bar.finished:.1f} s</title>"
    )


def _part_attribute(bar: Bar) -> str:
    """A part's bar says which row and part it is (a whole row's bar has no attribute)."""
    if bar.part is None:
        return ""
    return f' data-row="{_e(bar.row_id)}" data-part="{bar.part}/{bar.parts}"'


def _part_label(bar: Bar, left: float, top: int, width: float) -> str:
    """A part's label ("talk 2/3") on its solid bar, cut to the bar's width (none on a row's:
    one row is one bar; a split row's bars need saying they belong together)."""
    if bar.part is None:
        return ""
    fits = int((width - 4) // PART_LABEL_CHAR_WIDTH)
    which = f"{bar.part}/{bar.parts}"
    if len(bar.label) <= fits:
        label = bar.label
    elif fits >= len(which) + 3:  # the id cut short, the part kept: "a-long-i… 2/3"
        label = f"{bar.row_id[: fits - len(which) - 2]}… {which}"
    elif fits >= len(which):
        label = which
    else:
        return ""
    return f'<text class="part-label" x="{left + 2:.1f}" y="{top + 10}">{_e(label)}</text>'


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
    (first frame to slot release from its timeline; else its start plus its seconds); a split
    row's, each part's frames over that part's own time."""
    spans = []
    for row in summary.get("rows") or []:
        if not isinstance(row, Mapping):
            continue
        whole = _emitting(row)
        if whole is None:  # rendered nothing (a split row too, whatever its parts did)
            continue
        parts = [_emitting(p) for p in row.get("parts") or [] if isinstance(p, Mapping)]
        emitted = [span for span in parts if span is not None]
        spans.extend(emitted if emitted and len(emitted) == len(parts) else [whole])
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


def _emitting(entry: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(first frame out, last frame out, frames) of a row or a part; None when it rendered
    nothing or does not say when."""
    frames = entry.get("frames")
    if not _finite(frames) or frames <= 0:
        return None
    times = entry.get("timeline") if isinstance(entry.get("timeline"), Mapping) else {}
    start = times.get("first_frame_at", times.get("streaming_at", entry.get("started_at")))
    end = times.get("released_at")
    if not _finite(end) and _finite(entry.get("started_at")) and _finite(entry.get("seconds")):
        end = entry["started_at"] + entry["seconds"]
    if _finite(start) and _finite(end) and end > start:
        return float(start), float(end), float(frames)
    return None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rounded(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(round(t, 3), round(v, 3)) for t, v in points]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)
