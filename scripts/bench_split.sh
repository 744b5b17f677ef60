#!/usr/bin/env bash
# Long rows over several workers on one GPU machine, in one run (docs/cluster.md, benchmarks.md):
# 1. the seam figures at full size (random weights, fp16): a part's frames against the
#    uninterrupted stream's for overlaps 0/8/16/32/64 (scripts/bench_seams.py);
# 2. one long row unsplit on one worker, then split in two on two workers sharing the GPU
#    (cluster.gpus_per_worker=0.5), lossless encodes so the frames compare (scripts/bench_split.py).
#
#   scripts/bench_split.sh                 FRAMES=2000 SPLIT=1000 by default
#   scripts/bench_split.sh cpu             the machine's CPUs only (CUDA_VISIBLE_DEVICES=): the
#                                          tiny model, 3,000 frames unsplit on one CPU worker, then
#                                          split in two on two, each worker CPUS (4) CPUs/threads
# Results in $OUT: seams-full.json, split-gpu.json (or split-cpu<N>-tiny.json), the jobs' logs.
# Packages the GPU image lacks come as .gpu/site.tar.xz (scripts/pack_gpu_site.sh); it has no
# OpenCV cascade and no ffmpeg, so the driving frames are taken whole (framing.driving=off) and
# the rows are silent there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/bench-out}
WORK=${SPLIT_WORK:-/tmp/bench-split}
mkdir -p "$OUT" "$WORK"
. scripts/_gpu_env.sh if-missing  # the packages the image lacks, the common exports
if [ "${1:-}" = cpu ]; then
  shift
  CPUS=${CPUS:-4}
  python3 -c "import cv2" 2>/dev/null || set -- framing.driving=off "$@"  # no face tracking there
  echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null) cpus $(nproc)" | tee "$OUT/env.txt"
  CUDA_VISIBLE_DEVICES= python3 -m scripts.bench_split --model tiny --frames "${FRAMES:-3000}" \
    --split "${SPLIT:-1500}" --workers 2 --cpus-per-worker "$CPUS" --work "$WORK" \
    --out "$OUT/split-cpu$(nproc)-tiny.json" video.crf=0 "$@" 2>&1 | tail -4
  cp "$WORK"/*.log "$OUT"/ 2>/dev/null
  exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/env.txt"
echo "date $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null)" | tee -a "$OUT/env.txt"
python3 -c "from pipeline.models import ensure_random_weights as e; e('$WORK/weights-personalive', architecture='full', seed=0)"
echo "=== seams (full size)"
python3 -m scripts.bench_seams --model full --device cuda --dtype fp16 --frames "${SEAM_FRAMES:-240}" \
  --start "${SEAM_START:-120}" --weights "$WORK/weights-personalive" --out "$OUT/seams-full.json" 2>&1 | tail -7
echo "=== one long row: unsplit on one worker, split over two sharing the GPU"
python3 -m scripts.bench_split --frames "${FRAMES:-2000}" --split "${SPLIT:-1000}" --workers 2 \
  --gpus-per-worker 0.5 --work "$WORK" --out "$OUT/split-gpu.json" video.crf=0 "$@" 2>&1 | tail -4
cp "$WORK"/*.log "$OUT"/ 2>/dev/null
