#!/usr/bin/env bash
# GPU check (issue #14): on a machine with an NVIDIA GPU, in under 8 minutes,
#   1. bench/step_overhead.py  per-step time of plain SD1.5 vs UniFusion+ScaleU at 512 and 1024 px, fp16, PyTorch
#                              attention for both, FLOPs with attention counted analytically, device syncs per step;
#   2. bench/fuser_memory.py   peak memory of one fuser forward vs the block's attn1, fp16;
#   3. tests/host/test_gpu_paths.py with INSTDIFF_TEST_DEVICE=cuda (partial loads on the real GPU, dtypes, syncs).
# Without a GPU, or with --dry-run, the same scripts run at tiny sizes on the CPU, so this script stays correct.
#
#   scripts/gpu-check.sh [--dry-run]        # COMFYUI_PATH=... or the newest ../shared/hosts/comfyui-* is used
# Env: PYTHON (default python3), COMFYUI_PATH.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1

if [ -z "${COMFYUI_PATH:-}" ]; then
    for base in ../shared/hosts shared/hosts; do
        newest=$(ls -d "$base"/comfyui-* 2>/dev/null | sort -V | tail -n 1)
        if [ -n "$newest" ]; then COMFYUI_PATH=$(cd "$newest" && pwd); break; fi
    done
fi
if [ -z "${COMFYUI_PATH:-}" ]; then
    echo "gpu-check: no ComfyUI host: set COMFYUI_PATH (or put the hosts in ../shared/hosts)" >&2
    exit 2
fi
export COMFYUI_PATH
if [ "$DRY" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA device here: dry run on the CPU (tiny sizes)"
    DRY=1
fi

status=0
run() {   # run <seconds> <label> <command...>: print the output, remember failures, never hang
    local limit=$1 label=$2; shift 2
    echo; echo "=== $label"
    local t0=$SECONDS
    timeout "$limit" "$@"
    local rc=$?
    echo "--- $label: exit $rc in $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || status=1
}

echo "gpu-check: host $COMFYUI_PATH; $([ "$DRY" = 1 ] && echo 'dry run (CPU, tiny sizes)' || echo 'CUDA')"
if [ "$DRY" = 1 ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    run 600 "step overhead (dry run)" "$PY" bench/step_overhead.py --device cpu --channels 32 --sizes 64,128 \
        --steps 2 --rounds 2
    run 300 "fuser memory (dry run)" "$PY" bench/fuser_memory.py --sizes 64,128
else
    run 270 "step overhead (fp16, 512 + 1024 px)" "$PY" bench/step_overhead.py --device cuda --dtype fp16 \
        --sizes 512,1024 --steps 4 --rounds 5
    run 90 "fuser memory (fp16)" "$PY" bench/fuser_memory.py --device cuda --dtype fp16
    run 120 "host tier on the GPU" env INSTDIFF_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider \
        tests/host/test_gpu_paths.py
fi
exit $status
