#!/usr/bin/env bash
# Multi-process training with torchrun: bash tools/dist_train.sh CONFIG NPROC [train.py args]
# Works without GPUs: tools/train.py then uses gloo and CPU DDP (see its docstring).
# Environment: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (python).
set -euo pipefail
if [ "$#" -lt 2 ]; then
  echo "usage: bash $0 CONFIG NPROC [--work-dir DIR] [--cfg-options k=v ...] [--resume [CKPT]]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
case "$GPUS" in
  ''|*[!0-9]*|0) echo "error: NPROC must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --master_port="${PORT:-29500}" \
  --nproc_per_node="$GPUS" \
  "$here/train.py" "$CONFIG" --launcher pytorch "$@"
