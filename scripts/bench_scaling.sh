#!/usr/bin/env bash
# Scaling across the GPUs of one machine: render the same synthetic manifest (full-size model,
# random weights) with embedded Ray on 1 GPU and on all GPUs, same code and settings, then compare
# aggregate fps and check that every row landed exactly once (scripts/scaling_report.py).
# The clips are silent (video.audio=none): the comparison is of rendering, not of audio muxing.
#
#   scripts/bench_scaling.sh [rows] [frames] [extra overrides...]
#
# MODEL=tiny CPU_WORKERS=2 runs the same comparison on a machine without a GPU (CPU workers).
#
# Results: $OUT/scaling.json, $OUT/scaling.md and each run's log in $OUT (or ./bench-out).
# Packages the GPU image lacks can come as .gpu/site.tar.xz (see docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out}
ROWS=${1:-16}
FRAMES=${2:-160}
shift $(($# < 2 ? $# : 2))
WORK=${SCALING_WORK:-/tmp/scaling}
mkdir -p "$OUT" "$WORK"
. scripts/_gpu_env.sh if-missing  # the packages the image lacks, the common exports
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$OUT/env.txt"
python3 -c "import torch, ray; print('torch', torch.__version__, 'ray', ray.__version__)" | tee -a "$OUT/env.txt"

[ -f "$WORK/bench.csv" ] || python3 -m scripts.make_bench_manifest --rows "$ROWS" --frames "$FRAMES" --out-dir "$WORK"

render() {  # number of workers (GPUs; CPU workers on a machine without one), overrides...
  local n=$1 devices start=$SECONDS
  shift
  rm -rf "$WORK/out-$n"
  devices=$(seq -s, 0 $((n - 1)))
  echo "=== $n worker(s): CUDA_VISIBLE_DEVICES=$devices"
  if command -v nvidia-smi >/dev/null; then  # GPU busy % and memory every 5 s, for the record
    nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader -l 5 \
      >"$OUT/gpu-$n.csv" 2>/dev/null &
  fi
  CUDA_VISIBLE_DEVICES=$devices python3 run.py job=render "manifest=$WORK/bench.csv" \
    "model=${MODEL:-personalive}" model.random_init=true "model.weights_dir=$WORK/weights" \
    "storage.output_root=$WORK/out-$n" job.name=scaling job.progress=plain \
    "cluster.cpu_workers=$n" video.audio=none "$@" >"$OUT/render-$n.log" 2>&1
  echo "exit=$? wall=$((SECONDS - start)) s load average $(cut -d' ' -f1-3 /proc/loadavg)"
  tail -3 "$OUT/render-$n.log"
  kill %% 2>/dev/null
}

runs=()
most=$GPUS
[ "$most" -gt 0 ] || most=${CPU_WORKERS:-2}
for n in $(printf '%s\n' "$most" 1 | sort -rnu); do  # the most workers first (it writes the weights)
  render "$n" "$@"
  runs+=("$n=$WORK/out-$n/scaling")
done
python3 -m scripts.scaling_report --manifest "$WORK/bench.csv" "${runs[@]}" --json "$OUT/scaling.json" \
  | tee "$OUT/scaling.md"
