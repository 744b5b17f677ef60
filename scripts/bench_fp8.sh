#!/usr/bin/env bash
# model.fp8 on a GPU with FP8 tensor cores, in one go (docs/benchmarks.md, "FP8 matrix work"):
#
#   scripts/bench_fp8.sh probe    GPU tests, fidelity + per-shape timings (scripts/bench_fp8.py),
#                                 one job=bench run with FP8 (S=1, CUDA graphs)
#   scripts/bench_fp8.sh final    fidelity, then job=bench fp16 against FP8 at S=1 and S=4
#                                 (model=personalive: channels-last; CUDA graphs), same machine
#   scripts/bench_fp8.sh conv     do FP8 convolutions pay: GPU tests of the kernel, frames with
#                                 e4m3-rounded convolutions, then every convolution of an S=4
#                                 call, cuDNN fp16 against the Triton kernel in fp16 and e4m3
#                                 (scripts/probe_fp8_conv.py)
#   scripts/bench_fp8.sh unet     model.fp8=unet end to end: fidelity (unet-linear and unet),
#                                 then job=bench fp16 against fp8=unet at S=4
#   scripts/bench_fp8.sh fed      model.fp8=unet-linear with the feed-forwards' inputs written in
#                                 e4m3 by the LayerNorm and GEGLU kernels: GPU tests, fidelity,
#                                 each feed-forward shape fp16 / FP8 fed / FP8 with passes, then
#                                 job=bench fp16 against unet-linear at S=4 (CUDA graphs)
#   scripts/bench_fp8.sh attn     lever 2 at head dim 40: GPU tests of scripts/flash_head40.py, then
#                                 its configurations against cuDNN at the 64² level's own-key and
#                                 bank shapes (scripts/probe_attention.py --triton)
#   scripts/bench_fp8.sh attn8    lever 2, FP8 attention: cuDNN's FP8 attention (nvidia-cudnn-frontend,
#                                 from .gpu/cudnn-frontend.tar.xz: WITH_CUDNN_FRONTEND=1
#                                 scripts/pack_gpu_site.sh) against the model's fp16 cuDNN path at
#                                 the 64² and 32² levels' shapes (scripts/probe_fp8_attention.py)
#
# Results go to $OUT (or ./bench-out): fp8.json, bench.json, logs.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/_bench_common.sh
common=(model.dtype=fp16 model.channels_last=true model.cuda_graphs=true job.bench.flops=false)

case "${1:-probe}" in
  probe)
    timeout 120 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_fp8.py -k gpu 2>&1 | tail -4
    timeout 300 python3 scripts/bench_fp8.py --out "$OUT/fp8.json" --frames 200 2>&1 | tee "$OUT/fp8.log"
    bench fp8-S1 100 "${common[@]}" model.fp8=unet-linear model.streams_per_worker=1 job.bench.frames=64
    ;;
  final)
    timeout 200 python3 scripts/bench_fp8.py --out "$OUT/fp8.json" --frames 200 --skip-shapes 2>&1 | tee "$OUT/fp8.log"
    bench fp16-S1 90 "${common[@]}" model.streams_per_worker=1 job.bench.frames=64
    bench fp8-S1 90 "${common[@]}" model.fp8=unet-linear model.streams_per_worker=1 job.bench.frames=64
    bench fp16-S4 120 "${common[@]}" model.streams_per_worker=4 job.bench.frames=64
    bench fp8-S4 120 "${common[@]}" model.fp8=unet-linear model.streams_per_worker=4 job.bench.frames=64
    ;;
  conv)
    timeout 120 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_fp8_conv.py -k "not tiny and not refuses" 2>&1 | tail -4
    timeout 420 python3 -m scripts.probe_fp8_conv --out "$OUT/fp8-conv.json" --streams 4 2>&1 | tee "$OUT/fp8-conv.log"
    ;;
  unet)
    timeout 200 python3 scripts/bench_fp8.py --out "$OUT/fp8.json" --frames 200 --skip-shapes 2>&1 | tee "$OUT/fp8.log"
    bench fp16-S4 150 "${common[@]}" model.streams_per_worker=4 job.bench.frames=96
    bench fp8-unet-S4 150 "${common[@]}" model.fp8=unet model.streams_per_worker=4 job.bench.frames=96
    ;;
  fed)
    timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_fp8.py tests/test_fp8_producers.py -k gpu 2>&1 | tail -4
    timeout 300 python3 scripts/bench_fp8.py --out "$OUT/fp8.json" --frames 200 --linear-only --feed-forwards-only 2>&1 | tee "$OUT/fp8.log"
    bench fp16-S4 120 "${common[@]}" model.streams_per_worker=4 job.bench.frames=96
    bench fp8-S4 120 "${common[@]}" model.fp8=unet-linear model.streams_per_worker=4 job.bench.frames=96
    ;;
  attn)
    timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_flash_head40.py -k gpu 2>&1 | tail -4
    timeout 400 python3 -m scripts.probe_attention --triton --streams 4 --out "$OUT/attn40.json" 2>&1 | tee "$OUT/attn40.log"
    ;;
  attn8)
    if ! python3 -c "import cudnn" 2>/dev/null && [ -f .gpu/cudnn-frontend.tar.xz ]; then
      [ -d /tmp/cudnn-frontend ] || { mkdir -p /tmp/cudnn-frontend && tar -xJf .gpu/cudnn-frontend.tar.xz -C /tmp/cudnn-frontend; }
      export PYTHONPATH=$PYTHONPATH:/tmp/cudnn-frontend
    fi
    timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_probe_fp8_attention.py 2>&1 | tail -4
    timeout 400 python3 -m scripts.probe_fp8_attention --streams 4 --out "$OUT/attn8.json" 2>&1 | tee "$OUT/attn8.log"
    ;;
esac
tar -czf "$OUT/logs.tgz" -C "$OUT" $(cd "$OUT" && ls *.log 2>/dev/null) && rm -f "$OUT"/*.log
ls -la "$OUT"
