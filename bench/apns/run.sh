#!/usr/bin/env bash
# APNs push bench (see README.md here).  Needs `make module` first.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec perl bench/apns/bench.pl "$@"
