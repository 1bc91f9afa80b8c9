#!/usr/bin/env bash
# One-command GPU check (Testing/gpu/check.py): parity, bf16, timings, OOM fallback and DDP, in one run.
# The report (report.json, summary.txt) goes to $GPU_CHECK_DIR (default: gpu-check/ in the repository).
# Needs no network: the wheels prepared by `make gpu-wheels` in .whl/ are unpacked where modules are missing.
#   GPU_CHECK_DIR=/path/to/report bash Testing/gpu/check.sh            # full check on a GPU machine
#   bash Testing/gpu/check.sh --reduced                                # the CPU form that CI runs
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
out="${GPU_CHECK_DIR:-$root/gpu-check}"
mkdir -p "$out"
# the whole check takes under ~8 minutes on one H200 (timings stop after --budget seconds); a hard stop
# after GPU_CHECK_TIMEOUT seconds still leaves the report of every section finished by then
exec timeout --signal=INT "${GPU_CHECK_TIMEOUT:-600}" "$python" "$root/Testing/gpu/check.py" --out "$out" "$@"
