#!/usr/bin/env bash
# What framing costs a real render, on one machine in one run: the same manifest of real-face
# inputs (scripts/make_framing_manifest.py: 1080x1350 photos, 640x360 presenters at 10 % of the
# frame) rendered by job=render (embedded Ray, full-size model with random weights, 512x512, fp16,
# no audio) with
#   off:    framing.portrait=crop framing.driving=off (the whole picture: the engine alone)
#   face:   the defaults (portrait and driving frames cut around the face)
#   canvas: the defaults with video.canvas=1080x1920 (the face pasted back into the photo)
#   off2:   off again (how much the machine drifted over the run)
# and compares render fps over the GPU span (scripts/render_bench_report.py) and wall time.
#
#   scripts/bench_framing.sh [rows, default 12] [frames, default 160] [overrides...]
#   VARIANTS="face canvas" WARMUP=1 scripts/bench_framing.sh 12 120   # a short warm-up job first
#
# Results: $OUT/framing-bench.md and $OUT/framing-bench.tgz (summaries, logs, JSON). Packages the
# GPU image lacks come as .gpu/site.tar.xz (scripts/pack_gpu_site.sh); OpenCV 4 (the bundled face
# detector; the image's OpenCV 5 dropped it) as .gpu-cv/cv.tar.xz, unpacked into /tmp/site too.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out}
RAW=$OUT/raw
WORK=${FRAMING_WORK:-/tmp/framing-bench}
ROWS=${1:-12}
FRAMES=${2:-160}
shift $(($# < 2 ? $# : 2))
VARIANTS=${VARIANTS:-off face canvas off2}  # the first render of a fresh machine also compiles its kernels
mkdir -p "$RAW" "$WORK"
. scripts/_gpu_env.sh always  # the packages the image lacks, the common exports
if [ -f .gpu-cv/cv.tar.xz ]; then  # OpenCV 4 over the image's (its face detector), on every run
  mkdir -p /tmp/site && tar -xJf .gpu-cv/cv.tar.xz -C /tmp/site
  export PYTHONPATH=/tmp/site:$PWD
fi
{
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  python3 -c "import torch, ray, cv2; print('torch', torch.__version__, 'ray', ray.__version__, 'opencv', cv2.__version__)"
  echo "cpus $(nproc) date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)"
} | tee "$RAW/env.txt"
[ -f "$WORK/in/framing.csv" ] || python3 -m scripts.make_framing_manifest --rows "$ROWS" --frames "$FRAMES" --out-dir "$WORK/in"
python3 -c "from pipeline.models import ensure_random_weights as e; e('$WORK/weights', architecture='full', seed=0)"

if [ -n "${WARMUP:-}" ]; then  # a short job first: the measured ones start warm (kernels compiled)
  python3 run.py job=render "manifest=$WORK/in/framing.csv" model=personalive model.random_init=true \
    "model.weights_dir=$WORK/weights" "storage.output_root=$WORK/out-warmup" job.name=warmup \
    job.progress=plain video.audio=none job.max_frames=16 "$@" >"$RAW/render-warmup.log" 2>&1
  echo "=== warm-up: exit=$?"
fi
declare -A ARGS=(
  [off]="framing.portrait=crop framing.driving=off"
  [face]=""
  [canvas]="video.canvas=1080x1920"
  [off2]="framing.portrait=crop framing.driving=off"
)
header=--header
for v in $VARIANTS; do
  read -r -a variant <<<"${ARGS[$v]}"
  rm -rf "$WORK/out-$v"
  start=$SECONDS
  python3 run.py job=render "manifest=$WORK/in/framing.csv" model=personalive model.random_init=true \
    "model.weights_dir=$WORK/weights" "storage.output_root=$WORK/out-$v" "job.name=$v" \
    job.progress=plain video.audio=none "${variant[@]}" "$@" >"$RAW/render-$v.log" 2>&1
  echo "=== $v: exit=$? wall=$((SECONDS - start)) s"
  cp "$WORK/out-$v/$v/summary.json" "$RAW/summary-$v.json" 2>/dev/null
  python3 -m scripts.render_bench_report $header --label "$v" --job "$WORK/out-$v/$v" \
    --manifest "$WORK/in/framing.csv" --json "$RAW/framing-bench.json" | tee -a "$OUT/framing-bench.md"
  header=
  # CPU seconds on the rows' own threads: following faces and cutting, composing, encoding
  python3 -c "import json, sys; rows = json.load(open(sys.argv[1]))['rows']; f = [r.get('framing') or {} for r in rows]; print(sys.argv[2] + ': ' + ', '.join(f'{k} {sum(x.get(k, 0) for x in f):.1f} s' for k in ('track_seconds', 'compose_seconds', 'encode_seconds')) + f' over {sum(r[\"frames\"] for r in rows)} frames')" "$RAW/summary-$v.json" "$v" | tee -a "$RAW/costs.txt"
  tar -czf "$OUT/framing-bench.tgz" -C "$RAW" .
done
