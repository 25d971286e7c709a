#!/usr/bin/env bash
# Run the host tier (tests/host, real ComfyUI) once per ComfyUI checkout, each in its own Python process.
#
#   scripts/host-tests.sh HOST [HOST...] [-- extra pytest args]
#
# HOST is a ComfyUI root folder (with comfy/ and nodes.py); it is passed to the tests as COMFYUI_PATH.
# The interpreter is $PYTHON, else `python` (e.g. an activated venv), else python3.
# Prints one summary line per host and exits non-zero if any host failed (or collected no test).
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 HOST [HOST...] [-- pytest args]" >&2; exit 2; }

hosts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        -h|--help) usage ;;
        *) hosts+=("$1"); shift ;;
    esac
done
[ ${#hosts[@]} -gt 0 ] || usage

if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif command -v python >/dev/null 2>&1; then py=python
else py=python3
fi

logdir="$(mktemp -d)"
trap 'rm -rf "$logdir"' EXIT
summary=()
failed=0
i=0
for host in "${hosts[@]}"; do
    i=$((i + 1))
    log="$logdir/host$i.log"
    if [ ! -d "$host/comfy" ] || [ ! -f "$host/nodes.py" ]; then
        summary+=("FAIL  $host: not a ComfyUI checkout (needs comfy/ and nodes.py)")
        failed=1
        continue
    fi
    echo "=== host tier on $host"
    start=$(date +%s)
    COMFYUI_PATH="$host" "$py" -m pytest -q tests/host "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    result=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|errors|deselected)' "$log" | tail -n 1 \
        | sed -E 's/^=+ //; s/ =+$//')
    version=$(sed -nE 's/^__version__ *= *"([^"]+)".*/\1/p' "$host/comfyui_version.py" 2>/dev/null | head -n 1)
    if [ "$rc" -eq 0 ]; then status=PASS; else status=FAIL; failed=1; fi
    summary+=("$status  $host (ComfyUI ${version:-?}): ${result:-no pytest summary, exit $rc} [${secs}s wall]")
done

echo
echo "=== host tier summary"
for line in "${summary[@]}"; do echo "$line"; done
exit "$failed"
