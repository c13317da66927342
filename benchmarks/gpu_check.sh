#!/usr/bin/env bash
# GPU check (≤ 8 minutes on one H100/H200): GPU tests, 125M MFU (bf16 + fused attention +
# torch.compile), batched tiny models, TRAK throughput. `--dry-run`: the CPU path at toy sizes.
# Writes gpu_check.json (or --out PATH). See benchmarks/gpu_check.py and docs/benchmarks.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python}"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 "$py" "$here/gpu_check.py" "$@"
