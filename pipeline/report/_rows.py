"""One row as the page's script gets it: plain JSON (the script shows every text as text) with
the row's status and timings, its error, its output and contact sheet, its inputs, its extra
manifest columns, which run rendered it, its parts (a row split over workers) and its identity
and motion signals."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from ..progress import ROW_STATUSES
from ._frames import SHEET_COLUMNS, format_timestamp, timestamp_digits
from ._links import InputView, asset_stem, row_inputs
from ._previews import Preview
from ._summary import FAILURES
from ._values import as_mapping, as_text, format_utc, parse_time, rounded

#: What the signals chart of a row measures, and what it does not (shown on every chart).
SIGNALS_NOTE = (
    "Identity: cosine similarity of the CLIP image embedding of output frames to the portrait's "
    "— a drop means the output drifts away from the portrait's look; it does not judge lip sync, "
    "realism or expression. Motion: how much the output changes from frame to frame, beside the "
    "same for the driving clip (a flat output under a moving driving clip is a frozen face)."
)


def row_data(
    row: Mapping[str, Any], preview: Preview, portrait: InputView, driving: InputView
) -> dict[str, Any]:
    """One row as the page's script gets it (plain JSON; the script shows every text as text)."""
    row_id = str(row.get("row_id", ""))
    status = str(row.get("status", "unknown"))
    audio = row_inputs(row).get("audio")
    return {
        "id": row_id,
        "stem": asset_stem(row_id),
        "status": status if status in ROW_STATUSES else "unknown",
        "label": status,
        "frames": rounded(row.get("frames")),
        "seconds": rounded(row.get("seconds"), 3),
        "fps": rounded(row.get("fps"), 3),
        "attempts": rounded(row.get("attempts")),
        "worker": str(row.get("worker") or ""),
        "parts": _parts(row.get("parts")),
        "error": str(row["error"]) if row.get("error") else None,
        "failure": status in FAILURES,
        "output": _output(preview),
        "problem": preview.problem,
        "portrait": _nonempty(asdict(portrait)),
        "driving": _nonempty(asdict(driving)),
        "audio": str(audio) if audio else None,
        "extra": {str(k): as_text(v) for k, v in as_mapping(row.get("extra")).items()},
        "rendered": _rendered(row.get("rendered")),
        "signals": _signals(row.get("signals")),
        "meta": _meta(row, preview),
    }


def _output(preview: Preview) -> dict[str, Any] | None:
    """The output's player and contact sheet (None when there is neither to show)."""
    if not (preview.video_src or preview.sheet_src):
        return None
    digits = timestamp_digits(preview.times)
    return {
        "src": preview.video_src,
        "poster": preview.poster_src,
        "sheet": preview.sheet_src,
        "times": [round(t, 4) for t in preview.times],
        "labels": [format_timestamp(t, digits) for t in preview.times],
        "columns": min(SHEET_COLUMNS, len(preview.times)) or 1,
        "width": preview.width,
        "height": preview.height,
        "rate": preview.frame_rate,
        "duration": rounded(preview.duration_seconds, 3),
    }


def _meta(row: Mapping[str, Any], preview: Preview) -> str:
    """The card's line of facts: worker, size, rate, length, conditioning, faceless frames."""
    worker = f"worker{'s' if _parts(row.get('parts')) else ''} {row.get('worker')}"
    meta = [worker if row.get("worker") else "no worker"]
    if preview.width and preview.height:
        meta.append(f"{preview.width}×{preview.height}")
    if preview.frame_rate is not None:
        meta.append(f"{preview.frame_rate:.4g} fps")
    if preview.duration_seconds is not None:
        meta.append(f"{preview.duration_seconds:.1f} s")
    if row.get("conditioning"):
        meta.append(f"driving conditioning {row['conditioning']}")
    lost = as_mapping(row.get("framing")).get("driving_frames_without_face")
    if lost:
        meta.append(f"{lost} driving frame(s) without a face: cut whole")
    return " · ".join(meta)


def _parts(value: object) -> dict[str, Any] | None:
    """A row split over workers (``parts``): a line saying so and, per part, its frames of the
    row, worker, seconds, speed and status (None for a row rendered whole)."""
    parts = [as_mapping(p) for p in value if as_mapping(p)] if isinstance(value, list) else []
    if not parts:
        return None
    workers = list(dict.fromkeys(as_text(p.get("worker")) for p in parts if p.get("worker")))
    on = f"{len(workers)} workers ({', '.join(workers)})" if len(workers) > 1 else ""
    on = on or (f"one worker ({workers[0]})" if workers else "no worker")
    items = []
    for index, part in enumerate(parts):
        number = rounded(part.get("part"))
        status = as_text(part.get("status")) or "unknown"
        items.append(
            {
                "part": f"{(number if number is not None else index) + 1}/{len(parts)}",
                "frames": _frame_range(part.get("start"), part.get("end")),
                "worker": as_text(part.get("worker")) or None,
                "seconds": rounded(part.get("seconds"), 2),
                "fps": rounded(part.get("fps"), 2),
                "status": status if status in ROW_STATUSES else "unknown",
                "label": status,
            }
        )
    return {"caption": f"rendered in {len(parts)} parts on {on}", "items": items}


def _frame_range(start: object, end: object) -> str:
    """A part's frames of the row, both ends included ("240–479"; "–" when not told)."""
    first, stop = rounded(start), rounded(end)
    if first is None or stop is None or stop <= first:
        return "–"
    return f"{first}–{stop - 1}"


def _nonempty(view: dict[str, Any]) -> dict[str, Any] | None:
    return view if any(v for v in view.values()) else None


def _rendered(value: object) -> dict[str, Any] | None:
    """Who rendered the committed output: run, when, how fast (None when not told)."""
    rendered = as_mapping(value)
    if not rendered:
        return None
    at = parse_time(rendered.get("at"))
    return {
        "run": as_text(rendered.get("run")) or None,
        "at": format_utc(at) if at else as_text(rendered.get("at")) or None,
        "seconds": rounded(rendered.get("seconds"), 2),
        "fps": rounded(rendered.get("fps"), 2),
        "frames": rounded(rendered.get("frames")),
        "worker": as_text(rendered.get("worker")) or None,
    }


def _signals(value: object) -> dict[str, Any] | None:
    """The row's identity and motion series, finite numbers only (None when not computed)."""
    signals = as_mapping(value)
    times = signals.get("times")
    if not isinstance(times, list) or not times:
        return None

    def series(name: str) -> list[float | None] | None:
        values = signals.get(name)
        if not isinstance(values, list) or len(values) != len(times):
            return None
        return [rounded(v, 4) for v in values]

    return {
        "times": [rounded(t, 3) for t in times],
        "identity": series("identity"),
        "motion": series("motion"),
        "driving_motion": series("driving_motion"),
        "model": as_text(signals.get("model")) or None,
    }
