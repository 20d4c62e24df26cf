#!/usr/bin/env bash
# Check-in and command bench (see README.md here).  Needs `make module`
# first.  The module is copied first: a rebuild that overwrites
# build/ngx_mdm_module.so under a running nginx would crash it mid-bench.
#   bash bench/checkin/run.sh [tls-1k tls-10k fwd-1k fwd-10k conn-5k nocache-1k]
set -euo pipefail
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "${MDM_MODULE:-build/ngx_mdm_module.so}" "$tmp/ngx_mdm_module.so"
MDM_MODULE="$tmp/ngx_mdm_module.so" perl bench/checkin/bench.pl "$@"
