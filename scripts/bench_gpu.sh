#!/usr/bin/env bash
# Run a matrix of job=bench configurations on a GPU machine in one go; results append to
# $OUT/bench.json (or ./bench.json) and each run's log to $OUT/<label>.log.
#
#   scripts/bench_gpu.sh <set>      sets: levers (default), profile-compile, final, final2,
#                                   pipeline, layers, overlap, final3, fused, fused2,
#                                   final4, final5, graphs, graphs2, final6, final7,
#                                   compile, memory
#
# Each set runs today's code: the docs/benchmarks.md rows a set produced were measured on the
# code of that day (rows 13-21 on intermediate states of the same stop).
#
# Wheels the GPU image lacks can be unpacked from .whl/ (see docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/_bench_common.sh

case "${1:-levers}" in
  levers)
    bench fp16-S1 120 model.dtype=fp16 model.streams_per_worker=1 job.bench.frames=96
    bench fp16-S2 120 model.dtype=fp16 model.streams_per_worker=2 job.bench.frames=96
    bench fp16-S4 150 model.dtype=fp16 model.streams_per_worker=4 job.bench.frames=96
    bench fp16-S8 200 model.dtype=fp16 model.streams_per_worker=8 job.bench.frames=96
    bench bf16-S4 150 model.dtype=bf16 model.streams_per_worker=4 job.bench.frames=96
    bench fp16-S4-nhwc 150 model.dtype=fp16 model.streams_per_worker=4 model.channels_last=true job.bench.frames=96
    bench fp16-S4-taesd 150 model.dtype=fp16 model.streams_per_worker=4 model.vae_decoder=tiny job.bench.frames=96
    bench fp16-S1-eager 150 model.dtype=fp16 model.streams_per_worker=1 model.attention=eager job.bench.frames=64
    ;;
  profile-compile)
    bench fp16-S4-profile 150 model.dtype=fp16 model.streams_per_worker=4 job.bench.frames=48 job.bench.profile=true job.bench.flops=false
    bench fp16-S4-compile 330 model.dtype=fp16 model.streams_per_worker=4 model.compile=default job.bench.frames=96
    ;;
  final)
    bench fp16-S1-200f 100 model.dtype=fp16 model.streams_per_worker=1 job.bench.frames=200 job.bench.flops=false
    bench fp16-S1-2000f 220 model.dtype=fp16 model.streams_per_worker=1 job.bench.frames=2000 job.bench.flops=false
    bench fp16-S8-nhwc 110 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64
    bench fp16-S8-nhwc-regional 240 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    ;;
  final2)
    bench fp16-S8-nhwc 110 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64
    bench fp16-S8-nhwc-regional 270 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    ;;
  pipeline)  # rows 13-14 (traced, sync-checked S=8; single stream)
    bench fp16-S8-nhwc-v2 150 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 job.bench.flops=false job.bench.sync_check=true "job.bench.trace=$OUT/trace-S8-nhwc.json.gz"
    bench fp16-S1-v2 100 model.dtype=fp16 model.streams_per_worker=1 job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-nhwc-regional-v2 330 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false "job.bench.trace=$OUT/trace-S8-nhwc-regional.json.gz"
    ;;
  layers)  # rows 15-17 (S=8 traced, S=1, S=8 regional)
    bench fp16-S8-nhwc-v3 170 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 "job.bench.trace=$OUT/trace-S8-nhwc-v3.json.gz"
    bench fp16-S1-nhwc-v3 100 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-nhwc-regional-v3 240 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    ;;
  overlap)  # rows 18-20 (row 19's compiled GroupNorms are gone: that run is now plain regional)
    bench fp16-S8-nhwc-v4 170 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64
    bench fp16-S8-nhwc-regional-v4 240 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-nhwc-v4 100 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    ;;
  final3)  # rows 21-23: the best setting; single-stream memory over 200 and 2,000 frames
    bench fp16-S8-nhwc-regional-v5 230 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-nhwc-200f 70 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=200 job.bench.flops=false
    bench fp16-S1-nhwc-2000f 190 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=2000 job.bench.flops=false
    ;;
  fused)  # Triton NHWC kernels: checked and timed per shape, then S=8 (traced) and S=1 eager
    python3 scripts/check_nhwc_kernels.py --out "$OUT/nhwc-kernels.json" 2>&1 | tee "$OUT/nhwc-kernels.log"
    bench fp16-S8-nhwc-v6 170 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 "job.bench.trace=$OUT/trace-S8-nhwc-v6.json.gz"
    bench fp16-S1-nhwc-v6 100 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    ;;
  fused2)  # (the second run, compiling only the feed-forwards, was measured with a local patch)
    bench fp16-S8-nhwc-v7 120 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S16-nhwc-v7 150 model.dtype=fp16 model.streams_per_worker=16 model.channels_last=true job.bench.frames=48 job.bench.flops=false
    bench fp16-S8-nhwc-regional-v7 110 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    ;;
  final4)  # S=8 traced (GPU idle from the trace), single-stream memory over 200 and 2,000 frames
    bench fp16-S8-nhwc-v8 170 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 "job.bench.trace=$OUT/trace-S8-nhwc-v8.json.gz"
    bench fp16-S1-nhwc-200f-v8 70 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=200 job.bench.flops=false
    bench fp16-S1-nhwc-2000f-v8 170 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=2000 job.bench.flops=false
    python3 scripts/trace_summary.py "$OUT/trace-S8-nhwc-v8.json.gz" >"$OUT/trace-S8-nhwc-v8.txt"
    ;;
  final5)  # + fused residual adds and LayerNorms; S=8 eager, regional, single stream, S=8 traced
    python3 scripts/check_nhwc_kernels.py --out "$OUT/nhwc-kernels.json" 2>&1 | tee "$OUT/nhwc-kernels.log"
    bench fp16-S8-nhwc-v9 110 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64
    bench fp16-S8-nhwc-regional-v9 150 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.compile=regional job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-nhwc-v9 60 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-nhwc-traced-v9 150 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=48 job.bench.flops=false "job.bench.trace=$OUT/trace-S8-nhwc-v9.json.gz"
    python3 scripts/trace_summary.py "$OUT/trace-S8-nhwc-v9.json.gz" >"$OUT/trace-S8-nhwc-v9.txt"
    ;;
  graphs)  # CUDA graphs (GPU tests first), GEGLU kernel, reused batched banks; a traced S=8 call
    python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_cuda_graphs.py 2>&1 | tail -4
    bench fp16-S8-graphs-v10 120 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-nhwc-v10 100 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-graphs-v10 60 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-nhwc-traced-v10 130 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=48 job.bench.flops=false "job.bench.trace=$OUT/trace-S8-nhwc-v10.json.gz"
    timeout 60 python3 scripts/trace_summary.py "$OUT/trace-S8-nhwc-v10.json.gz" --top 25 >"$OUT/trace-S8-nhwc-v10.txt"
    rm -f "$OUT/trace-S8-nhwc-v10.json.gz"
    timeout 60 python3 scripts/check_nhwc_kernels.py --out "$OUT/nhwc-kernels.json" >"$OUT/nhwc-kernels.txt" 2>&1
    ;;
  graphs2)  # + frame-attention kernel, fused VAE blocks; full keyframe banks; traced S=8 call
    python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_cuda_graphs.py 2>&1 | tail -4
    bench fp16-S8-graphs-v11 120 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-nhwc-v11 100 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-graphs-v11 60 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-graphs-banks-v11 150 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.cuda_graphs=true job.bench.frames=160 job.bench.flops=false model.animator.keyframe_threshold=0.0
    bench fp16-S8-nhwc-traced-v11 130 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=48 job.bench.flops=false "job.bench.trace=$OUT/trace-S8-nhwc-v11.json.gz"
    timeout 60 python3 scripts/trace_summary.py "$OUT/trace-S8-nhwc-v11.json.gz" --top 25 >"$OUT/trace-S8-nhwc-v11.txt"
    rm -f "$OUT/trace-S8-nhwc-v11.json.gz"
    ;;
  final6)  # + upsampling kernel, frame attention over head groups: eager and graphs, S=8 and S=1,
    # S=8 with full keyframe banks (3 per stream, every stream)
    bench fp16-S8-nhwc-v12 100 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64
    bench fp16-S8-graphs-v12 120 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-nhwc-v12 60 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-graphs-v12 60 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S8-banks-v12 130 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=160 job.bench.flops=false model.animator.keyframe_threshold=0.0
    bench fp16-S4-banks-v12 100 model.dtype=fp16 model.streams_per_worker=4 model.channels_last=true job.bench.frames=160 job.bench.flops=false model.animator.keyframe_threshold=0.0
    ;;
  final7)  # + bank attention merged by log-sum-exp (GPU tests first); full banks; TAESD decoder
    python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_gpu_kernels.py tests/test_cuda_graphs.py 2>&1 | tail -4
    bench fp16-S8-nhwc-v13 100 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=64
    bench fp16-S8-banks-v13 130 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true job.bench.frames=160 job.bench.flops=false model.animator.keyframe_threshold=0.0
    bench fp16-S4-banks-v13 100 model.dtype=fp16 model.streams_per_worker=4 model.channels_last=true job.bench.frames=160 job.bench.flops=false model.animator.keyframe_threshold=0.0
    bench fp16-S1-graphs-v13 60 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true model.cuda_graphs=true job.bench.frames=64 job.bench.flops=false
    bench fp16-S1-graphs-banks-v13 90 model.dtype=fp16 model.streams_per_worker=1 model.channels_last=true model.cuda_graphs=true job.bench.frames=160 job.bench.flops=false model.animator.keyframe_threshold=0.0
    bench fp16-S8-taesd-v13 100 model.dtype=fp16 model.streams_per_worker=8 model.channels_last=true model.vae_decoder=tiny job.bench.frames=64
    ;;
  compile)
    bench fp16-S1-compile 300 model.dtype=fp16 model.streams_per_worker=1 model.compile=default job.bench.frames=96
    bench fp16-S8-compile 420 model.dtype=fp16 model.streams_per_worker=8 model.compile=default job.bench.frames=96
    ;;
  memory)
    bench fp16-S1-200f 200 model.dtype=fp16 model.streams_per_worker=1 job.bench.frames=200 job.bench.flops=false
    bench fp16-S1-2000f 420 model.dtype=fp16 model.streams_per_worker=1 job.bench.frames=2000 job.bench.flops=false
    ;;
  *)
    bench "$@"
    ;;
esac
tar -czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls *.log 2>/dev/null) && rm -f "$OUT"/*.log
ls -la "$OUT"
