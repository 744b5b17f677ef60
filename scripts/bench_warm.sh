#!/usr/bin/env bash
# How soon a job commits its first frames: a job with embedded Ray (every job pays the worker's
# boot, imports, weights and first calls) against jobs on a running Ray cluster that keep their
# workers warm (cluster=warm, docs/cluster.md "Warm workers"), on one machine, in one run.
#
#   scripts/bench_warm.sh [jobs on the warm cluster, default 3] [overrides for every job...]
#
# 1. one job with embedded Ray (the default), 2. `ray start --head` on 127.0.0.1, 3. the jobs
# with cluster=warm one after another: the first starts the workers, the next take them over,
# 4. `ray stop`. Each job renders the same synthetic manifest (ROWS x FRAMES, default 8 x 48,
# full-size model with random weights, 512x512, silent clips) into its own folder. The table
# (seconds after run.py started, from each summary.json's startup, and the job's aggregate fps)
# goes to $OUT/warm-bench.md and .json; each job's log and summary to $OUT/raw.
#
# MODEL=tiny EXTRA="model.resolution=64" runs it on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out}
RAW=$OUT/raw
WORK=${WARM_WORK:-/tmp/warm-bench}
JOBS=${1:-3}
shift $(($# < 1 ? $# : 1))
MODEL=${MODEL:-personalive}
SPEC=${ROWS:-8}x${FRAMES:-48}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
mkdir -p "$RAW" "$WORK"
. scripts/_gpu_env.sh if-missing  # the packages the image lacks, the common exports
RAY="python3 -m ray.scripts.scripts"
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
  python3 -c "import torch, ray; print('torch', torch.__version__, 'ray', ray.__version__)"
  echo "cpus $(nproc) date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
} | tee "$RAW/env.txt"

ARCH=$([ "$MODEL" = tiny ] && echo tiny || echo full)
python3 -c "from pipeline.models import ensure_random_weights as e; e('$WORK/weights', architecture='$ARCH', seed=0)"
[ -f "$WORK/m/bench.csv" ] || python3 -m scripts.make_bench_manifest --spec "$SPEC" --out-dir "$WORK/m"

render() {  # render <label> [overrides...]: one job into its own folder
  local label=$1
  shift
  rm -rf "$WORK/out-$label"
  local start=$SECONDS
  python3 run.py job=render "manifest=$WORK/m/bench.csv" "model=$MODEL" model.random_init=true \
    "model.weights_dir=$WORK/weights" "storage.output_root=$WORK/out-$label" job.name=warm \
    job.progress=plain video.audio=none "${EXTRA_ARGS[@]}" "$@" >"$RAW/$label.log" 2>&1
  echo "$label: exit=$? wall=$((SECONDS - start)) s"
  cp "$WORK/out-$label/warm/summary.json" "$RAW/summary-$label.json" 2>/dev/null
}

labels=(embedded)
render embedded "$@"
echo "=== ray start --head on 127.0.0.1"
$RAY stop --force >/dev/null 2>&1
export RAY_AUTH_MODE=token  # `ray start` clusters want a token (~/.ray/auth_token); the jobs send it
$RAY start --head --node-ip-address=127.0.0.1 --port="${RAY_PORT:-6390}" --include-dashboard=false \
  --disable-usage-stats >"$RAW/ray-start.log" 2>&1 || { cat "$RAW/ray-start.log"; exit 1; }
for i in $(seq 1 "$JOBS"); do
  render "warm-$i" cluster=warm "cluster.address=127.0.0.1:${RAY_PORT:-6390}" "$@"
  labels+=("warm-$i")
done
$RAY stop --force >/dev/null 2>&1

python3 - "$RAW" "$OUT" "${labels[@]}" <<'EOF'
import json, sys
from pathlib import Path
raw, out, labels = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
rows, lines = [], [
    "| job | Ray up | workers ready | first frame | first commit | warm workers | aggregate fps |",
    "|---|---|---|---|---|---|---|",
]
fmt = lambda value: "–" if value is None else f"{value:.1f} s"
for label in labels:
    path = raw / f"summary-{label}.json"
    if not path.exists():
        lines.append(f"| {label} | (no summary) | | | | | |")
        continue
    summary = json.loads(path.read_text())
    startup, totals = summary.get("startup") or {}, summary.get("totals") or {}
    workers = startup.get("workers") or []
    warm = sum(1 for worker in workers if worker.get("jobs", 1) > 1)
    fps = totals.get("aggregate_fps")  # frames over the span from the first row's start to the last's end
    rows.append({"label": label, "startup": startup, "totals": totals})
    lines.append(
        f"| {label} | {fmt(startup.get('ray_ready_seconds'))} | "
        f"{fmt(startup.get('workers_ready_seconds'))} | {fmt(startup.get('first_frame_seconds'))} | "
        f"**{fmt(startup.get('first_commit_seconds'))}** | {warm} of {len(workers)} | "
        f"{'–' if fps is None else f'{fps:.2f}'} |"
    )
(out / "warm-bench.json").write_text(json.dumps(rows, indent=1))
(out / "warm-bench.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
