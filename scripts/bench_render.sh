#!/usr/bin/env bash
# The real job=render against job=bench with the same stream count, on one machine, in one run:
# what a producer's batch gets next to what the engine can do. Synthetic manifests (full-size
# model with random weights, silent 25 fps clips, 512x512, no download):
#   a: 16 rows x 160 frames   b: 64 rows x 48 frames   c: 1 row x 3,000 frames + 30 rows x 100
#
#   scripts/bench_render.sh [manifests, default "a b c"] [overrides for both jobs...]
#   scripts/bench_render.sh "a b" model.streams_per_worker=8
#
# For each manifest: job=bench on its first rows (steady state at the streams a worker takes:
# model.streams_per_worker, auto by default), then job=render with embedded Ray, GPU busy sampled all along
# (scripts/gpu_busy.py); scripts/render_bench_report.py compares them (render fps, its share of
# job=bench and of the ideal, GPU busy over the span, first frame and first commit after the job
# started, exactly-once audit) and writes each job's rows as timeline bars. The first render of a
# fresh machine pays the cold start (Triton compiles, kernel checks); the later ones start warm.
#
# BENCH_FROM=<folder> takes each manifest's job=bench result (bench-<m>.json) from an earlier call
# instead of running it (a GPU call too short for both; the ratio is then across calls).
# BENCH_ONCE=1 runs job=bench for the first manifest only and compares every later one with it
# (same machine, same call, same streams: job=bench measures the engine, not the manifest's rows),
# which leaves room for more renders in one call.
# MODEL=tiny EXTRA="model.resolution=64 cluster.cpu_workers=1" runs it on a machine without a GPU.
# Results: $OUT/render-bench.md (the table) and $OUT/render-bench.tgz, which also holds
# render-bench.json, timeline-<m>.csv, summary-<m>.json, report-<m>.html (its timeline picture),
# the GPU busy samples, each job's log and the render worker's warnings
# (worker-<m>.log; refreshed after every manifest). Packages the GPU image
# lacks come as .gpu/site.tar.xz (scripts/pack_gpu_site.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out}
RAW=$OUT/raw
WORK=${RENDER_WORK:-/tmp/render-bench}
MANIFESTS=${1:-a b c}
shift $(($# < 1 ? $# : 1))
MODEL=${MODEL:-personalive}
BENCH_FRAMES=${BENCH_FRAMES:-120}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"
mkdir -p "$RAW" "$WORK"
. scripts/_gpu_env.sh if-missing  # the packages the image lacks, the common exports
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
  python3 -c "import torch, ray; print('torch', torch.__version__, 'ray', ray.__version__)"
  echo "cpus $(nproc) date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
} | tee "$RAW/env.txt"

declare -A SPEC=([a]=16x160 [b]=64x48 [c]=1x3000,30x100)
ARCH=$([ "$MODEL" = tiny ] && echo tiny || echo full)
start=$SECONDS
python3 -c "from pipeline.models import ensure_random_weights as e; e('$WORK/weights', architecture='$ARCH', seed=0)"
echo "random weights ready in $((SECONDS - start)) s"

header=--header
for m in $MANIFESTS; do
  [ -n "${SPEC[$m]:-}" ] || { echo "unknown manifest $m (a, b or c)"; continue; }
  [ -f "$WORK/$m/bench.csv" ] || python3 -m scripts.make_bench_manifest --spec "${SPEC[$m]}" --out-dir "$WORK/$m"
  if [ -n "${BENCH_ONCE:-}" ] && [ -n "${first:-}" ]; then
    cp "$RAW/bench-$first.json" "$RAW/bench-$m.json"
    echo "=== $m (${SPEC[$m]}): job=bench of $first, earlier in this call (BENCH_ONCE)"
  elif [ -n "${BENCH_FROM:-}" ] && [ -f "$BENCH_FROM/bench-$m.json" ]; then
    # a GPU call too short for both jobs: job=bench's result from an earlier call (say so when
    # quoting the ratio: the same kind of machine, not the same run)
    cp "$BENCH_FROM/bench-$m.json" "$RAW/bench-$m.json"
    echo "=== $m (${SPEC[$m]}): job=bench reused from $BENCH_FROM (an earlier call)"
  else
    echo "=== $m (${SPEC[$m]}): job=bench"
    python3 run.py job=bench "model=$MODEL" job.progress=plain job.bench.flops=false \
      "job.bench.manifest=$WORK/$m/bench.csv" "job.bench.frames=$BENCH_FRAMES" "job.bench.output=$RAW/bench-$m.json" "job.bench.label=bench-$m" \
      "${EXTRA_ARGS[@]}" "$@" >"$RAW/bench-$m.log" 2>&1
    echo "exit=$? $(python3 -c "import json; r = json.load(open('$RAW/bench-$m.json'))[-1]; print(f'S={r[\"streams\"]}: {r[\"output_fps\"]:.2f} fps, {r[\"device_ms_per_call\"] or 0:.0f} GPU ms/call, {r[\"peak_memory_gib\"] or 0:.1f} GiB')" 2>&1 | tail -1)"
  fi
  first=${first:-$m}
  echo "=== $m: job=render"
  rm -rf "$WORK/out-$m"
  python3 -m scripts.gpu_busy "$RAW/busy-$m.csv" &
  sampler=$!
  start=$SECONDS
  python3 run.py job=render "manifest=$WORK/$m/bench.csv" "model=$MODEL" model.random_init=true \
    "model.weights_dir=$WORK/weights" "storage.output_root=$WORK/out-$m" "job.name=$m" \
    job.progress=plain video.audio=none "${EXTRA_ARGS[@]}" "$@" >"$RAW/render-$m.log" 2>&1
  echo "exit=$? wall=$((SECONDS - start)) s"
  kill "$sampler" 2>/dev/null
  wait "$sampler" 2>/dev/null
  grep -E "workers ready|first frame out" "$RAW/render-$m.log" | cut -c1-400
  # the worker's warnings (embedded Ray keeps its log in the session folder): failed captures
  grep -hE "CUDA graph|WARNING|ERROR" /tmp/ray/session_latest/logs/worker-*.err >"$RAW/worker-$m.log" 2>/dev/null
  grep -c "capture failed" "$RAW/worker-$m.log" | sed 's/^/worker captures failed: /'
  cp "$WORK/out-$m/$m/summary.json" "$RAW/summary-$m.json" 2>/dev/null
  cp "$WORK/out-$m/$m/report.html" "$RAW/report-$m.html" 2>/dev/null
  python3 -m scripts.render_bench_report $header --label "$m" --job "$WORK/out-$m/$m" \
    --manifest "$WORK/$m/bench.csv" --bench "$RAW/bench-$m.json" --busy "$RAW/busy-$m.csv" \
    --json "$RAW/render-bench.json" --timeline "$RAW/timeline-$m.csv" | tee -a "$OUT/render-bench.md"
  header=
  cp "$OUT/render-bench.md" "$RAW/"
  tar -czf "$OUT/render-bench.tgz" -C "$RAW" .
done
cat "$OUT/render-bench.md"
