# Sourced by the job=bench drivers (bench_gpu.sh, bench_fp8.sh) from the repository root: the
# results folder $OUT, the packages the GPU image lacks, the machine's description in
# $OUT/env.txt, and bench <label> <seconds> <overrides...> (one job=bench run, logged).
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
elif [ -f .gpu/site.tar.xz ]; then  # the packed site of scripts/bench_scaling.sh (Ray included)
  [ -d /tmp/site ] || { mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site; }
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
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
