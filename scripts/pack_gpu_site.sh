#!/usr/bin/env bash
# Pack the Python packages a bare GPU image lacks (PyAV, diffusers, Hydra, Ray, ...) into
# .gpu/site.tar.xz, for machines that cannot reach a package index. scripts/bench_scaling.sh
# unpacks it into /tmp/site when those packages are missing there.
#
#   scripts/pack_gpu_site.sh [python version, default 3.12]
#
# Ray's wheel is slimmed (the Java jars, the dashboard's web client and the libraries the render
# job does not use: rllib, serve, tune, train, data, llm) and its binaries stripped, and the whole
# is xz-compressed: about 53 MB instead of the wheels' 130 MB.
#
# WITH_CUDNN_FRONTEND=1 also packs nvidia-cudnn-frontend (cuDNN's FP8 attention, for
# scripts/probe_fp8_attention.py only) into .gpu/cudnn-frontend.tar.xz, about 6 MB, apart from the
# site: the two together stay under the device's 64-MiB carry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-3.12}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pip_download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WORK/wheels" "$@"
}
# each package without its dependencies (--no-deps): omegaconf held to what hydra-core 1.3 takes,
# as pip resolves it on a fresh install (an omegaconf 2.4 here warned on every run)
pip_download av diffusers hydra-core "omegaconf>=2.3,<2.4" importlib_metadata ffmpeg-python future ray \
  jsonschema referencing rpds-py jsonschema-specifications
# Hydra's parser runtime is published as a source archive only: build its (pure-Python) wheel
python3 -m pip wheel -q --no-deps antlr4-python3-runtime==4.9.3 -w "$WORK/wheels"
mkdir -p "$WORK/site"
for wheel in "$WORK"/wheels/*.whl; do unzip -qo "$wheel" -d "$WORK/site"; done
ray=$WORK/site/ray
rm -rf "$ray"/{jars,dashboard/client,rllib,serve,tune,train,data,llm}
find "$WORK/site" -name '*.map' -delete
strip --strip-unneeded "$ray/_raylet.so" "$ray/core/src/ray/gcs/gcs_server" "$ray/core/src/ray/raylet/raylet"
mkdir -p .gpu
tar -cJf .gpu/site.tar.xz -C "$WORK/site" .
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
ls -la .gpu/site.tar.xz
if [ -n "${WITH_CUDNN_FRONTEND:-}" ]; then
  pip_download nvidia-cudnn-frontend
  mkdir -p "$WORK/cudnn-frontend"
  unzip -qo "$WORK"/wheels/nvidia_cudnn_frontend-*.whl -d "$WORK/cudnn-frontend"
  tar -cJf .gpu/cudnn-frontend.tar.xz -C "$WORK/cudnn-frontend" .
  ls -la .gpu/cudnn-frontend.tar.xz
fi
