# Sourced by the job=bench drivers (bench_gpu.sh, bench_fp8.sh, bench_ab.sh) from the repository
# root: the results folder $OUT, the environment (scripts/_gpu_env.sh: the packages the GPU image
# lacks, the common exports), the machine's description in $OUT/env.txt, and
# bench <label> <seconds> <overrides...> (one job=bench run, logged).
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
. scripts/_gpu_env.sh always  # the packages the image lacks, the common exports
# compiled kernels are reused by later runs on this machine (compile once, not per run)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/portrait-render-inductor}
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/env.txt"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw --format=csv | tee -a "$OUT/env.txt"

bench() {  # label, seconds, overrides...
  local label=$1 limit=$2
  shift 2
  echo "=== $label"
  timeout "$limit" python3 run.py job=bench model=personalive job.progress=plain \
    "job.bench.output=$OUT/bench.json" "job.bench.label=$label" "$@" >"$OUT/$label.log" 2>&1
  echo "exit=$? $(grep -E 'fps|Error|error' "$OUT/$label.log" | tail -2)"
}
