"""One render-benchmark figure: a real ``job=render`` against ``job=bench`` with the same streams.

    python -m scripts.render_bench_report --label a --job OUT/a/render/bench --manifest M.csv \\
        --bench bench.json --busy busy.csv --json results.json --timeline a-timeline.csv

Reads the job's ``summary.json`` (row timelines, start-up times), the ``job=bench`` result (its
steady-state fps, the last entry of ``--bench``) and GPU busy samples (``scripts/gpu_busy.py``);
checks that every row landed exactly once with the driving video's frame count
(``scripts/scaling_report.py``); prints one markdown table row and appends the figures to
``--json``; writes the rows' bars (``pipeline.timeline``) to ``--timeline`` as CSV.

The figures:

* **render fps**: output frames over the GPU span, from the first row's first denoising call to
  the last row's last (start-up, the first preparation and the last commit excluded); the job's own
  ``aggregate_fps`` (to the last commit) is kept beside it.
* **ideal**: ``job=bench``'s fps × the share of denoising calls that emit frames (a row of N
  four-frame chunks needs N + 3 calls: the window's warm-up), the most a render of these rows can
  reach without changing the algorithm; **of ideal** is render fps over it.
* **GPU busy**: the mean NVML busy share of the samples inside the GPU span.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from pipeline.timeline import bars, slot_idle_seconds
from scripts.scaling_report import check_job, driving_frames


def emitting_share(frames: list[int], chunk: int = 4, warmup_calls: int = 3) -> float:
    """Share of a row set's denoising calls that emit frames: N chunks take N + 3 calls."""
    chunks = [math.ceil(f / chunk) for f in frames]
    return sum(chunks) / sum(c + warmup_calls for c in chunks)


def busy_over(path: Path | None, start: float, end: float) -> float | None:
    """Mean busy percent of the samples between ``start`` and ``end`` (Unix times)."""
    if path is None or not path.is_file():
        return None
    with open(path, newline="") as handle:
        samples = [
            float(row["busy_percent"])
            for row in csv.DictReader(handle)
            if start <= float(row["unix_time"]) <= end
        ]
    return round(sum(samples) / len(samples), 1) if samples else None


def report(
    label: str, job: Path, manifest: Path, bench: Path | None, busy: Path | None
) -> dict[str, Any]:
    expected = driving_frames(manifest)
    audit = check_job(job, expected)
    summary = json.loads((job / "summary.json").read_text())
    done = [r for r in summary["rows"] if r["status"] == "done" and r.get("timeline")]
    start = min(r["timeline"]["streaming_at"] for r in done)
    end = max(r["timeline"]["released_at"] for r in done)
    frames = sum(r["frames"] for r in done)
    render_fps = frames / (end - start) if end > start else 0.0
    bench_result = json.loads(bench.read_text())[-1] if bench and bench.is_file() else None
    bench_fps = bench_result["output_fps"] if bench_result else None
    share = emitting_share(list(expected.values()))
    startup = summary.get("startup") or {}
    idle = slot_idle_seconds(bars(summary))
    streams = {w.get("name"): w.get("streams") for w in startup.get("workers") or []}
    return {
        "label": label,
        "rows": len(expected),
        "frames": frames,
        "streams_per_worker": streams,
        "bench_streams": bench_result["streams"] if bench_result else None,
        "gpu_span_seconds": round(end - start, 2),
        "render_fps": round(render_fps, 2),
        "job_aggregate_fps": summary["totals"].get("aggregate_fps"),
        "bench_fps": bench_fps,
        "ratio_to_bench": round(render_fps / bench_fps, 3) if bench_fps else None,
        "emitting_share": round(share, 3),
        "ideal_fps": round(bench_fps * share, 2) if bench_fps else None,
        "of_ideal": round(render_fps / (bench_fps * share), 3) if bench_fps else None,
        "gpu_busy_percent": busy_over(busy, start, end),
        "slot_idle_seconds": {f"{w}/{s}": round(v, 2) for (w, s), v in sorted(idle.items())},
        "workers_ready_seconds": startup.get("workers_ready_seconds"),
        "first_frame_seconds": startup.get("first_frame_seconds"),
        "first_commit_seconds": startup.get("first_commit_seconds"),
        "workers": startup.get("workers"),
        "row_phases_median_seconds": row_phases(done),
        "exactly_once": audit["exactly_once"],
        "problems": audit["problems"],
    }


# a row's life on its worker, point to point (pipeline.row_result.RowTimeline)
PHASES = (
    ("accepted_at", "fused_at", "prepare: portrait fused"),
    ("fused_at", "prepared_at", "prepare: the rest"),
    ("prepared_at", "streaming_at", "wait for a slot"),
    ("streaming_at", "released_at", "stream"),
    ("released_at", "encoded_at", "last segment"),
    ("encoded_at", "committed_at", "join, mux, commit"),
    ("committed_at", "finished_at", "signals"),
)


def row_phases(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Median seconds of each phase of the rows' timelines (phases a row's timeline lacks, e.g. a
    job from before the point existed, are left out): where a row's time on its worker goes."""
    medians = {}
    for begin, end, name in PHASES:
        spans = sorted(
            r["timeline"][end] - r["timeline"][begin]
            for r in rows
            if begin in r["timeline"] and end in r["timeline"]
        )
        if spans:
            medians[name] = round(spans[len(spans) // 2], 2)
    return medians


def markdown_row(figures: dict[str, Any]) -> str:
    def fmt(value: Any, pattern: str = "{:.2f}") -> str:
        return "–" if value is None else pattern.format(value)

    return (
        f"| {figures['label']} | {figures['rows']} | {figures['frames']} | "
        f"{fmt(figures['bench_streams'], '{}')} | {fmt(figures['bench_fps'])} | "
        f"{fmt(figures['render_fps'])} | {fmt(figures['ratio_to_bench'], '{:.1%}')} | "
        f"{fmt(figures['ideal_fps'])} | {fmt(figures['of_ideal'], '{:.1%}')} | "
        f"{fmt(figures['gpu_busy_percent'], '{:.1f} %')} | "
        f"{fmt(figures['first_frame_seconds'], '{:.1f}')} / "
        f"{fmt(figures['first_commit_seconds'], '{:.1f}')} | "
        f"{'yes' if figures['exactly_once'] else 'NO'} |"
    )


HEADER = (
    "| manifest | rows | frames | S | job=bench fps | render fps | of bench | ideal fps | of ideal "
    "| GPU busy | first frame / commit (s) | exactly once |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--job", type=Path, required=True, help="the render job's folder")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--bench", type=Path, help="job=bench's JSON (job.bench.output)")
    parser.add_argument("--busy", type=Path, help="scripts/gpu_busy.py's CSV")
    parser.add_argument("--json", type=Path, help="append the figures to this JSON list")
    parser.add_argument("--timeline", type=Path, help="write the rows' bars here (CSV)")
    parser.add_argument("--header", action="store_true", help="print the table's header first")
    args = parser.parse_args(argv)
    figures = report(args.label, args.job, args.manifest, args.bench, args.busy)
    if args.header:
        print(HEADER)
    print(markdown_row(figures))
    for worker in figures["workers"] or []:  # how each worker's calls went (not a table column)
        gpu = worker.get("gpu") or {}
        print(
            f"{worker.get('name')}: {gpu.get('calls')} calls, sent to an idle GPU "
            f"{gpu.get('calls_sent_to_idle_gpu')}, without a stream "
            f"{gpu.get('calls_sent_without_a_stream')}, captured a graph "
            f"{gpu.get('calls_that_captured_a_graph')} "
            f"({gpu.get('seconds_in_calls_that_captured')} s)"
            + (
                f", graphs given up: {', '.join(gpu['graphs_given_up'])}"
                if gpu.get("graphs_given_up")
                else ""
            ),
            file=sys.stderr,
        )
    phases = ", ".join(f"{k} {v} s" for k, v in figures["row_phases_median_seconds"].items())
    print(f"a row's phases (median): {phases}", file=sys.stderr)
    if not figures["exactly_once"]:
        print(f"exactly-once problems: {figures['problems'][:5]}", file=sys.stderr)
    if args.json:
        previous = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.write_text(json.dumps(previous + [figures], indent=2) + "\n")
    if args.timeline:
        summary = json.loads((args.job / "summary.json").read_text())
        found = bars(summary)
        with open(args.timeline, "w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(found[0].as_dict()) if found else ["row_id"]
            )
            writer.writeheader()
            writer.writerows(bar.as_dict() for bar in found)
    return 0 if figures["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
