#!/usr/bin/env bash
# The GPU check (see benchmarks/gpu_check.py): CUDA tests, samples/s, time to 25/28/30 dB.
# On a bare GPU machine it installs the project first; on the CPU it runs the same, skipping CUDA tests.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import fieldkd, pytest" >/dev/null 2>&1; then
    pip install -q -c constraints.txt -e ".[test]"
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec python benchmarks/gpu_check.py "$@"
