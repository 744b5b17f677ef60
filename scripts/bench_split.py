"""One long row on one worker against the same row split over several: makespan, frames, seams.

Makes a 1-row manifest (a synthetic talking head of ``--frames`` frames with a sine audio file,
`scripts/make_bench_manifest.py`), renders it with ``job=render`` twice in fresh processes —
unsplit on one worker, then split into parts of ``--split`` frames on ``--workers`` workers — and
compares: wall time of each job (its summary's run span), the split job's share of the unsplit
time, exact frame counts, audio against video duration, and the split output's pixel difference
to the unsplit one per part boundary (decoded; use ``video.crf=0`` to see the model's difference
rather than the encoder's).

    python -m scripts.bench_split --frames 3000 --split 1500 --workers 2 --model tiny   # CPU
    CUDA_VISIBLE_DEVICES= python -m scripts.bench_split --model tiny --cpus-per-worker 4  # big CPU
    python -m scripts.bench_split --frames 2000 --split 1000 --workers 2 --gpus-per-worker 0.5

Every worker of both jobs gets ``--cpus-per-worker`` CPUs (on a CPU worker, as many torch
threads), so one worker is compared with several of the same size. Each later part's start (from
accepting it to its first call: the keyframe scan over the frames before it) is reported as
seconds and as ``start_cost``: seconds per frame before the part, as a share of the part's own
seconds per rendered frame (what ``cluster.split_start_cost`` takes, docs/cluster.md).

Writes ``--out`` (JSON) and prints one line per job.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _manifest(work: Path, frames: int) -> Path:
    folder = work / f"long-{frames}"
    csv = folder / "bench.csv"
    if not csv.exists():
        subprocess.run(
            [sys.executable, "-m", "scripts.make_bench_manifest", "--rows", "1", "--frames",
             str(frames), "--out-dir", str(folder)],
            cwd=REPO, check=True,
        )  # fmt: skip
    try:
        import imageio_ffmpeg
    except ImportError:  # a GPU image without an ffmpeg: the row stays silent
        return csv
    audio = folder / "tone.m4a"
    if not audio.exists():
        seconds = frames / 25
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
             f"sine=frequency=440:sample_rate=44100:duration={seconds}", "-c:a", "aac", str(audio)],
            check=True,
        )  # fmt: skip
    rows = csv.read_text().splitlines()
    with_audio = folder / "bench-audio.csv"
    with_audio.write_text(f"{rows[0]},audio\n{rows[1]},{audio}\n")
    return with_audio


def _job(label: str, manifest: Path, out: Path, overrides: list[str], log: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # an earlier run's commit would skip the row
    started = time.monotonic()
    command = [sys.executable, "run.py", "job=render", f"manifest={manifest}",
               f"storage.output_root={out}", "job.progress=plain", "job.name=long", *overrides]  # fmt: skip
    with open(log, "w") as stream:
        code = subprocess.run(command, cwd=REPO, stdout=stream, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - started
    summary = json.loads((out / "long" / "summary.json").read_text())
    (row,) = summary["rows"]
    startup = summary.get("startup", {})
    result = {
        "label": label, "exit": code, "wall_seconds": round(wall, 1), "status": row["status"],
        "frames": row["frames"], "row_seconds": row["seconds"], "fps": row["fps"],
        "workers_ready_seconds": startup.get("workers_ready_seconds"),
        "output": row.get("output"), "parts": row.get("parts"),
    }  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "parts"}), flush=True)
    return result


def _machine() -> dict:
    """Where it ran: CPUs this process may use, the date, the GPUs a job may see."""
    return {
        "cpus": len(os.sched_getaffinity(0)), "date": time.strftime("%Y-%m-%d"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }  # fmt: skip


def _decode(path: str) -> np.ndarray:
    from pipeline.media import VideoReader

    return np.stack(list(VideoReader(path)))


def _compare(whole: dict, split: dict) -> dict:
    from pipeline.media import probe

    info = probe(split["output"])
    a, b = _decode(whole["output"]), _decode(split["output"])
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    boundaries = [p["start"] for p in split["parts"] or []][1:]
    per_part = []
    for part in split["parts"] or []:
        d = diff[part["start"] : part["end"]]
        per_part.append({"start": part["start"], "end": part["end"], "max": int(d.max()),
                         "mean": round(float(d.mean()), 4), "seam_max": int(d[:4].max())})  # fmt: skip
    return {
        "frames_whole": int(len(a)), "frames_split": int(len(b)),
        "video_seconds": info.video.duration_seconds,
        "audio_seconds": info.audio.duration_seconds if info.audio else None,
        "boundaries": boundaries, "max": int(diff.max()), "mean": round(float(diff.mean()), 4),
        "parts": per_part,
    }  # fmt: skip


def _start_costs(parts: list[dict] | None) -> list[dict]:
    """Each later part's start: seconds from its acceptance to its first denoising call, and
    per frame before it as a share of the part's seconds per rendered frame."""
    costs = []
    for part in (parts or [])[1:]:
        timeline = part.get("timeline") or {}
        if not timeline.get("prepared_at") or not part.get("frames"):
            continue
        seconds = timeline["prepared_at"] - timeline["accepted_at"]
        per_frame = part["seconds"] / part["frames"]
        scanned = max(1, part["start"] - part["overlap"])
        costs.append({"part": part["part"], "start": part["start"], "start_seconds": round(seconds, 2),
                      "start_cost": round(seconds / scanned / per_frame, 3)})  # fmt: skip
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--split", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="personalive", help="model preset (tiny on a CPU)")
    parser.add_argument("--gpus-per-worker", type=float, default=None)
    parser.add_argument(
        "--cpus-per-worker", type=float, default=None,
        help="CPUs (a CPU worker's torch threads) of every worker in both jobs; default 1 with "
        "--model tiny, else the config's",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-split"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="more Hydra overrides for both jobs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(args.work, args.frames)
    common = [f"model={args.model}", "model.random_init=true",
              f"model.weights_dir={args.work / ('weights-' + args.model)}", *args.overrides]  # fmt: skip
    if args.model == "tiny":
        common.append("model.resolution=64")
    cpus = args.cpus_per_worker or (1 if args.model == "tiny" else None)
    if cpus is not None:
        common.append(f"cluster.cpus_per_worker={cpus:g}")
    one = ["cluster.split_frames=0", "cluster.num_workers=1"]
    many = [f"cluster.split_frames={args.split}", f"cluster.num_workers={args.workers}"]
    if args.gpus_per_worker is not None:
        many.append(f"cluster.gpus_per_worker={args.gpus_per_worker}")
    from pipeline.models import ensure_random_weights  # made before any job is timed

    architecture = "tiny" if args.model == "tiny" else "full"
    ensure_random_weights(args.work / f"weights-{args.model}", architecture=architecture, seed=0)
    whole = _job("one worker, unsplit", manifest, args.work / "out-whole", common + one,
                 args.work / "whole.log")  # fmt: skip
    split = _job(f"{args.workers} workers, split at {args.split}", manifest, args.work / "out-split",
                 common + many, args.work / "split.log")  # fmt: skip
    document = {
        "frames": args.frames, "split": args.split, "workers": args.workers, "model": args.model,
        "cpus_per_worker": cpus, "overrides": args.overrides, "machine": _machine(),
        "command": " ".join(["python -m scripts.bench_split", *(argv or sys.argv[1:])]),
        "whole": whole, "split_job": split, "start_costs": _start_costs(split["parts"]),
        "wall_ratio": round(split["wall_seconds"] / whole["wall_seconds"], 3),
        "row_seconds_ratio": round(split["row_seconds"] / whole["row_seconds"], 3),
        "comparison": _compare(whole, split),
    }  # fmt: skip
    print(json.dumps({k: document[k] for k in ("wall_ratio", "row_seconds_ratio", "start_costs")}))
    print(json.dumps(document["comparison"]))
    if args.out:
        args.out.write_text(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
