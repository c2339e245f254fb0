#!/usr/bin/env bash
# Set up this machine for shapegen4d (system packages, ./.venv) and run one command:
#   bash infra/local.sh demo [key=value ...]   the whole loop on the embedded default (python -m jobs.demo):
#                                               sample dataset -> tiny training -> registry -> generated .glb
#   bash infra/local.sh test [pytest args ...]  run the test suite
#   bash infra/local.sh setup                   only install
# Idempotent: a second call re-installs nothing unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

log() { printf '\n== %s\n' "$*"; }

system_packages() {
  # EGL + Mesa (llvmpipe): headless pyrender. libusb: open3d imports it. g++: fpsample builds from sdist.
  local pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libusb-1.0-0 g++)
  local missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing system packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

python_env() {
  local stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
  [ -f "$stamp" ] && return
  log "creating .venv with $($PY --version)"
  [ -d .venv ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # torch first: a CPU user's torch must be in place before anything that depends on it, or pip
  # resolves a multi-GB CUDA build. Point SHAPEGEN4D_TORCH_INDEX at a CPU wheel index if needed.
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q "torch==${SHAPEGEN4D_TORCH_VERSION:-2.13.0}" ${SHAPEGEN4D_TORCH_INDEX:+--index-url "$SHAPEGEN4D_TORCH_INDEX"}
  fi
  .venv/bin/pip install -q -e ".[test]"
  rm -f .venv/.installed-*; touch "$stamp"
}

test_tools() {
  # Independent references the tests compare against: Blender's glTF importer (bpy needs
  # numpy<2, so it gets its own venv) and the Khronos glTF validator.
  if [ ! -x .venv-bpy/bin/python ] || ! .venv-bpy/bin/python -c "import bpy" 2>/dev/null; then
    log "installing bpy into .venv-bpy (Blender as a module, ~400 MB)"
    "$PY" -m venv .venv-bpy
    .venv-bpy/bin/pip install -q "bpy==5.0.1"
  fi
  if [ ! -d .cache/npm/node_modules/gltf-validator ]; then
    log "installing gltf-validator (npm)"
    npm install -s --prefix .cache/npm gltf-validator@2.0.0-dev.3.10 >/dev/null
  fi
}

cmd=${1:-}; shift || true
case "$cmd" in
  setup) system_packages; python_env ;;
  demo)
    system_packages; python_env
    log "dataset -> training -> registry -> generation (python -m jobs.demo)"
    exec .venv/bin/python -m jobs.demo "$@" ;;
  test)
    system_packages; python_env; test_tools
    export SHAPEGEN4D_BPY_PYTHON="$ROOT/.venv-bpy/bin/python"
    log "running the tests"
    exec .venv/bin/python -m pytest -q "$@" ;;
  *) echo "usage: bash infra/local.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
