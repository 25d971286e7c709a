#!/usr/bin/env bash
# Run the host tier (tests/host, real ComfyUI) once per ComfyUI checkout, each in its own Python process.
#
#   scripts/host-tests.sh HOST [HOST...] [-- extra pytest args]
#
# HOST is a ComfyUI root folder (with comfy/ and nodes.py); it is passed to the tests as COMFYUI_PATH.
# The interpreter is $PYTHON, else `python` (e.g. an activated venv), else python3.
# Prints one summary line per host (ComfyUI version, passed / failed / skipped / errors) and exits non-zero if any
# host failed (or collected no test). HOST_TESTS_SUMMARY=FILE also appends those lines to FILE.
# HOST_TESTS_LAST_ONLY="tests/host/x.py ..." runs those test files on the last HOST only (--ignore on the others),
# e.g. the slow full-size parity modules.
# OMP_NUM_THREADS defaults to 1 (torch's threads fight over a small machine's cores otherwise), and no bytecode is
# written (PYTHONDONTWRITEBYTECODE=1): the host trees may be shared and must stay untouched.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONDONTWRITEBYTECODE=1

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
    only_last=()
    if [ "$i" -lt "${#hosts[@]}" ]; then
        for t in ${HOST_TESTS_LAST_ONLY:-}; do only_last+=("--ignore=$t"); done
        [ ${#only_last[@]} -eq 0 ] || echo "(not on this host: ${HOST_TESTS_LAST_ONLY})"
    fi
    COMFYUI_PATH="$host" "$py" -m pytest -q tests/host ${only_last[@]+"${only_last[@]}"} "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    secs=$(( $(date +%s) - start ))
    result=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|errors|deselected|xfailed|xpassed)' "$log" \
        | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
    count() { local n; n=$(grep -oE "[0-9]+ ($1)" <<<"$result" | head -n 1 | cut -d' ' -f1); echo "${n:-0}"; }
    version=$(sed -nE 's/^__version__ *= *"([^"]+)".*/\1/p' "$host/comfyui_version.py" 2>/dev/null | head -n 1)
    if [ "$rc" -eq 0 ]; then status=PASS; else status=FAIL; failed=1; fi
    if [ -n "$result" ]; then
        counts="$(count passed) passed, $(count failed) failed, $(count skipped) skipped, $(count 'errors?') errors"
    else
        counts="no pytest summary, exit $rc"
    fi
    summary+=("$status  ComfyUI ${version:-?} ($host): $counts [${secs}s]")
done

echo
echo "=== host tier summary"
for line in "${summary[@]}"; do echo "$line"; done
if [ -n "${HOST_TESTS_SUMMARY:-}" ]; then printf '%s\n' "${summary[@]}" >>"$HOST_TESTS_SUMMARY"; fi
exit "$failed"
