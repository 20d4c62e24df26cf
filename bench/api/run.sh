#!/usr/bin/env bash
# Admin API enqueue bench (see README.md here).  Needs `make module` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec perl bench/api/bench.pl "$@"
