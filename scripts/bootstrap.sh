#!/usr/bin/env bash
# Build (once) and activate the pinned virtualenv rep_mm runs in, then install rep_mm into it.
#
# Usage: source <(bash scripts/bootstrap.sh --print-env)   or   bash scripts/bootstrap.sh
# Prints the path of the venv's python on its last line.
#
# The venv lives OUTSIDE the repository, keyed by a hash of the pinned requirements, so that a
# fresh clone on a machine that already built it is ready in seconds. mmcv 2.1.0 has no wheel
# for this torch: it is built once from its sdist with ops (~10 min on 2 cores) and the wheel is
# cached next to the venv. Everything is idempotent; a half-built venv is never reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${REP_MM_CACHE:-$HOME/.cache/rep_mm}"
py="${REP_MM_PYTHON:-python3}"
torch_pins="torch==2.14.1 torchvision==0.29.1"
mmcv_version="2.1.0"
# Bump when the install steps below change (the venv key hashes this line, the pins and
# requirements.txt, not the whole script, so that comments and the rep_mm step do not rebuild it).
env_revision=2

pyver="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
key="$( (echo "$torch_pins $mmcv_version $pyver $env_revision"; cat "$here/requirements.txt") | sha256sum | cut -c1-12)"
venv="$cache/venv-$pyver-$key"
wheels="$cache/wheels"
log() { echo "[bootstrap] $*" >&2; }

mkdir -p "$cache" "$wheels"
exec 9>"$cache/.lock"
flock 9   # two bootstraps (demo + tests) never build the same venv at once

if [ ! -f "$venv/.complete" ]; then
  log "building venv $venv (one-time; later runs reuse it)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  vpip="$venv/bin/python -m pip"
  log "installing $torch_pins"
  $vpip install -q $torch_pins
  log "installing the pinned OpenMMLab stack"
  $vpip install -q -r "$here/requirements.txt"

  mmcv_dir="$wheels/mmcv-$mmcv_version-torch2.14.1-$pyver"
  if ! ls "$mmcv_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $mmcv_version with ops from its sdist (about 10 minutes on 2 cores)"
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
    $vpip download -q --no-deps --no-binary :all: --no-build-isolation -d "$build/src" "mmcv==$mmcv_version"
    tar -xzf "$build"/src/mmcv-$mmcv_version.tar.gz -C "$build"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$mmcv_version/setup.py"
    (cd "$build/mmcv-$mmcv_version" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" \
        $vpip wheel -q --no-build-isolation --no-deps -w "$build/out" .)
    # publish the cached wheel atomically: a killed build never leaves a half wheel behind
    mkdir -p "$wheels/.tmp.$$"
    cp "$build"/out/mmcv-*.whl "$wheels/.tmp.$$/"
    rm -rf "$mmcv_dir"
    mv "$wheels/.tmp.$$" "$mmcv_dir"
  fi
  $vpip install -q --no-deps "$mmcv_dir"/mmcv-*.whl

  log "installing mmdeploy 1.3.1 (without its stale protobuf pin) and onnx runtime"
  $vpip install -q --no-deps mmdeploy==1.3.1
  $vpip install -q onnx onnxruntime onnxscript aenum prettytable terminaltables multiprocess
  "$venv/bin/python" -c "import mmcv.ops, mmpretrain.models, mmseg.models, mmdet.models, mmdeploy" \
    || { log "the stack does not import; venv left incomplete"; exit 1; }
  touch "$venv/.complete"
  log "venv ready"
fi

# rep_mm itself: editable, no dependency resolution (seconds); skipped when the venv already
# imports rep_mm from this checkout (so parallel runs never see it half-reinstalled).
installed="$(cd / && "$venv/bin/python" -c 'import importlib.util as u, os; print(os.path.dirname(os.path.dirname(os.path.realpath(u.find_spec("rep_mm").origin))))' 2>/dev/null || true)"
if [ "$installed" != "$(realpath "$repo")" ] || [ ! -x "$venv/bin/rep-mm" ]; then
  "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$repo" >&2
fi
echo "$venv/bin/python"
