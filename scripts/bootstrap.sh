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
env_revision=3

pyver="$("$py" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
key="$( (echo "$torch_pins $mmcv_version $pyver $env_revision"; cat "$here/requirements.txt") | sha256sum | cut -c1-12)"
venv="$cache/venv-$pyver-$key"
wheels="$cache/wheels"
t0=$SECONDS
log() { printf '[bootstrap %3dm%02ds] %s\n' $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)) "$*" >&2; }
# Runs "$@" with its output in a log file and prints a progress line every 30 s: the elapsed
# time and, for a ninja build, the last "[done/total]" step it reached.
with_progress() {
  local what="$1"; shift
  local out; out="$(mktemp)"
  "$@" >"$out" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 & wait $!
    kill -0 "$pid" 2>/dev/null || break
    local step; step="$(grep -ao '^ *\[[0-9]*/[0-9]*\]' "$out" | tail -n 1 | tr -d ' ' || true)"
    log "$what: still running${step:+, compiled $step}"
  done
  if ! wait "$pid"; then log "$what failed; its output:"; tail -n 40 "$out" >&2; rm -f "$out"; return 1; fi
  rm -f "$out"
}

mkdir -p "$cache" "$wheels"
exec 9>"$cache/.lock"
flock 9   # two bootstraps (demo + tests) never build the same venv at once

if [ ! -f "$venv/.complete" ]; then
  log "building venv $venv (one-time; later runs reuse it)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  vpip="$venv/bin/python -m pip"
  log "installing $torch_pins (about 5.5 GB in the venv, 2-4 minutes)"
  with_progress "torch" $vpip install -q $torch_pins
  log "installing the pinned OpenMMLab stack (about 1 minute)"
  with_progress "OpenMMLab stack" $vpip install -q -r "$here/requirements.txt"

  mmcv_dir="$wheels/mmcv-$mmcv_version-torch2.14.1-$pyver"
  if ! ls "$mmcv_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $mmcv_version with ops from its sdist (10-15 minutes on 2 cores, once per machine)"
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
    $vpip download -q --no-deps --no-binary :all: --no-build-isolation -d "$build/src" "mmcv==$mmcv_version"
    tar -xzf "$build"/src/mmcv-$mmcv_version.tar.gz -C "$build"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes C++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$mmcv_version/setup.py"
    (cd "$build/mmcv-$mmcv_version" && export MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="$(nproc)" &&
        with_progress "mmcv build" $vpip wheel -v --no-build-isolation --no-deps -w "$build/out" .)
    # publish the cached wheel atomically: a killed build never leaves a half wheel behind
    mkdir -p "$wheels/.tmp.$$"
    cp "$build"/out/mmcv-*.whl "$wheels/.tmp.$$/"
    rm -rf "$mmcv_dir"
    mv "$wheels/.tmp.$$" "$mmcv_dir"
  fi
  $vpip install -q --no-deps "$mmcv_dir"/mmcv-*.whl

  log "installing mmdeploy 1.3.1 and its SDK runtime (without their stale pins), onnx runtime"
  $vpip install -q --no-deps mmdeploy==1.3.1 mmdeploy-runtime==1.3.1
  $vpip install -q onnx onnxruntime onnxscript aenum prettytable terminaltables multiprocess
  "$venv/bin/python" -c "import mmcv.ops, mmpretrain.models, mmseg.models, mmdet.models, mmdeploy, mmdeploy_runtime" \
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
