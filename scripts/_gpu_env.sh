# The environment of the GPU benchmark drivers, and nothing else. Sourced from the repository root
# by bench_render.sh, bench_scaling.sh, bench_split.sh, bench_warm.sh, bench_framing.sh and
# _bench_common.sh (so also by bench_gpu.sh, bench_fp8.sh and bench_ab.sh).
#
# 1. The Python packages a bare GPU image lacks go to /tmp/site, first on the path
#    (PYTHONPATH=/tmp/site:$PWD): the wheels in .whl/ (installed on every run), otherwise the packed
#    site .gpu/site.tar.xz (scripts/pack_gpu_site.sh; unpacked once, when /tmp/site is not there).
#      . scripts/_gpu_env.sh if-missing   only where `import av, diffusers, hydra, ray` fails
#      . scripts/_gpu_env.sh always       whenever .whl/ or .gpu/ came along
#                                         (_bench_common.sh, bench_framing.sh)
#    The mode is always given: a file sourced without arguments sees its caller's.
# 2. The exports every driver shares: unbuffered logs, no tokenizer threads, Ray's Windows/macOS
#    cluster mode off, no Hugging Face Hub (the weights are random or already on disk), and no
#    NVLink multicast (NVLS) in NCCL, torch's symmetric memory or NVSHMEM.
case "${1:-}" in
  if-missing | always) ;;
  *) echo "scripts/_gpu_env.sh: give a mode, if-missing or always (got '${1:-}')" >&2; return 2 ;;
esac
if [ "$1" = always ] || ! python3 -c "import av, diffusers, hydra, ray" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
  elif [ -f .gpu/site.tar.xz ]; then
    [ -d /tmp/site ] || { mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site; }
    export PYTHONPATH=/tmp/site:$PWD
  fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
