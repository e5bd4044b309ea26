#!/usr/bin/env bash
# Run python inside rep_mm's pinned environment (built on first use): scripts/run.sh -m pytest ...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$(bash "$here/bootstrap.sh" | tail -n 1)"
cd "$here/.."
exec "$py" "$@"
