#!/usr/bin/env bash
# A change measured against the code before it, on one GPU machine in one call: job=bench of the
# old tree and of this one, alternately, per configuration (the ratio is what to read: machines
# drift), then the fidelity gate (200 streamed frames of both, scripts/fidelity_ab.py) and the
# upsampling probe (scripts/probe_upsample_conv.py). Results in $OUT: bench.json, fidelity.json,
# probe.json and each run's log.
#
#   git archive <old-commit> pipeline jobs conf run.py | (mkdir -p .ab/base && tar -x -C .ab/base)
#   scripts/bench_ab.sh .ab/base "S8:model.streams_per_worker=8" "S1g:model.streams_per_worker=1 model.cuda_graphs=true"
#
# (.ab/ is ignored by git; the device tool carries it when asked: carry [".gpu", ".ab"].)
set -uo pipefail
cd "$(dirname "$0")/.."
BASE=$(cd "$1" && pwd)
shift
source scripts/_bench_common.sh
SITE=${PYTHONPATH%%:*}  # /tmp/site where the image lacks packages

bench_in() {  # tree, label, overrides...
  local tree=$1 label=$2
  shift 2
  echo "=== $label"
  (cd "$tree" && PYTHONPATH="$SITE:$tree" timeout "${LIMIT:-150}" python3 run.py job=bench \
    model=personalive job.progress=plain job.bench.flops=false "job.bench.frames=${FRAMES:-64}" \
    "job.bench.output=$OUT/bench.json" "job.bench.label=$label" "$@" >"$OUT/$label.log" 2>&1)
  echo "exit=$? $(grep -E 'fps|Error|error' "$OUT/$label.log" | tail -1)"
}

[ "${PROBE:-1}" = 1 ] && timeout 120 python3 -m scripts.probe_upsample_conv --out "$OUT/probe.json"
for spec in "$@"; do
  label=${spec%%:*}
  read -r -a overrides <<<"${spec#*:}"
  bench_in "$PWD" "new-$label" "${overrides[@]}"
  bench_in "$BASE" "old-$label" "${overrides[@]}"
done
if [ "${FIDELITY:-1}" = 1 ]; then
  echo "=== fidelity"
  PYTHONPATH="$SITE:$BASE" timeout 150 python3 scripts/fidelity_ab.py stream --out "$OUT/old.npy"
  PYTHONPATH="$SITE:$PWD" timeout 150 python3 scripts/fidelity_ab.py stream --out "$OUT/new.npy"
  python3 scripts/fidelity_ab.py compare "$OUT/old.npy" "$OUT/new.npy" | tee "$OUT/fidelity.json"
  rm -f "$OUT"/old.npy "$OUT"/new.npy
fi
