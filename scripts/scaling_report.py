"""Compare render jobs of the same manifest on different numbers of GPUs, and check that every row
landed exactly once in each.

    python -m scripts.scaling_report --manifest M.csv 1=/out1/job 2=/out2/job [--json out.json]

Each ``N=folder`` is a finished job folder (local) rendered with N workers. For each job: the
aggregate output fps (frames over the span from the first row's start to the last row's end, from
summary.json; worker start-up excluded), the job's wall time, per-worker fps, rows per worker, and
the scaling efficiency against the smallest N (aggregate_N / (aggregate_1 * N / 1)). Exactly once:
one committed row folder (marker) and one committed upload per row (folders
without a marker, e.g. from an earlier run with other settings, are counted but invisible to readers), one public video per row whose bytes match
the marker's checksum, and whose demuxed frame count equals the driving video's.
Exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.media import probe


def video_frames(path: Path) -> int:
    """The video's frame count, as the container records it."""
    return probe(path).video.num_frames


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_job(job: Path, expected: dict[str, int]) -> dict[str, Any]:
    """Totals of one job and the list of exactly-once problems (empty when all is well)."""
    summary = json.loads((job / "summary.json").read_text())
    rows = summary["rows"]
    problems: list[str] = []
    ids = Counter(row["row_id"] for row in rows)
    problems += [f"row {rid} has {n} results" for rid, n in ids.items() if n != 1]
    problems += [f"row {rid} has no result" for rid in expected if rid not in ids]
    problems += [f"row {r['row_id']} is {r['status']}" for r in rows if r["status"] != "done"]

    commits: dict[str, list[dict[str, Any]]] = {}
    uncommitted = []  # row folders of other settings or unfinished attempts: invisible to readers
    for row_dir in sorted((job / "_rows").iterdir()):
        marker = row_dir / "commit.json"
        if not marker.exists():
            uncommitted.append(row_dir.name)
            continue
        commit = json.loads(marker.read_text())
        commits.setdefault(commit["row_id"], []).append(commit)
        uploads = list(row_dir.glob("video.*.mp4"))
        if len(uploads) != 1:
            problems.append(f"{row_dir.name}: {len(uploads)} committed uploads, expected 1")
    public = sorted(job.glob("*-*.mp4"))
    if len(public) != len(expected):
        problems.append(f"{len(public)} public videos for {len(expected)} rows")
    for row_id, frames in expected.items():
        found = commits.get(row_id, [])
        if len(found) != 1:
            problems.append(f"row {row_id}: {len(found)} committed row folders, expected 1")
            continue
        commit = found[0]
        video = job / Path(commit["video"]).name
        if not video.exists() or sha256(video) != commit["video_sha256"]:
            problems.append(f"row {row_id}: {video.name} missing or not the committed bytes")
        elif (got := video_frames(video)) != frames:
            problems.append(
                f"row {row_id}: {got} frames in {video.name}, driving video has {frames}"
            )

    totals = summary["totals"]
    per_worker = Counter(row["worker"] for row in rows)
    worker_fps = {}
    for worker in per_worker:
        mine = [r for r in rows if r["worker"] == worker and r.get("started_at")]
        if not mine:
            continue
        span = max(r["started_at"] + r["seconds"] for r in mine) - min(
            r["started_at"] for r in mine
        )
        worker_fps[worker] = round(sum(r["frames"] for r in mine) / span, 2) if span > 0 else 0.0
    return {
        "job": str(job),
        "rows": len(rows),
        "frames": totals["frames"],
        "span_seconds": totals.get("span_seconds"),
        "aggregate_fps": totals.get("aggregate_fps"),
        "rows_per_worker": dict(sorted(per_worker.items())),
        "fps_per_worker": dict(sorted(worker_fps.items())),
        "uncommitted_row_folders": len(uncommitted),
        "exactly_once": not problems,
        "problems": problems,
    }


def driving_frames(manifest: Path) -> dict[str, int]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        return {
            row["id"]: video_frames(manifest.parent / row["driving_video"])
            for row in csv.DictReader(handle)
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("jobs", nargs="+", help="N=job_folder, N the number of GPUs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    expected = driving_frames(args.manifest)
    runs = {}
    for spec in args.jobs:
        count, _, folder = spec.partition("=")
        runs[int(count)] = check_job(Path(folder), expected)
    base_n = min(runs)
    base = runs[base_n]["aggregate_fps"] / base_n
    print(
        "| workers (GPUs) | rows | frames | span (s) | aggregate fps | fps per GPU | efficiency | exactly once |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n, run in sorted(runs.items()):
        run["gpus"] = n
        run["fps_per_gpu"] = round(run["aggregate_fps"] / n, 2)
        run["efficiency"] = round(run["aggregate_fps"] / (base * n), 3)
        print(
            f"| {n} | {run['rows']} | {run['frames']} | {run['span_seconds']:.1f} | "
            f"{run['aggregate_fps']:.2f} | {run['fps_per_gpu']:.2f} | {run['efficiency']:.1%} | "
            f"{'yes' if run['exactly_once'] else 'NO: ' + '; '.join(run['problems'][:3])} |"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2) + "\n")
    return 0 if all(run["exactly_once"] for run in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
