#!/bin/bash
# Boot to SSH-ready, this checkout against another, interleaved: ROUNDS rounds of `harness bench boot -n N` in
# each, the first side alternating, so that a change in the host's load falls on both sides.  Run it on an
# idle machine (realtime guests).
# Prints a Markdown table of each round's medians.
#
#   tools/bench-boot-ab.sh /path/to/other/checkout [TIMING] [ROUNDS] [N]
#
# The other checkout runs with its own harness code (python -m harness.cli from its directory) and this
# checkout's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
OTHER=$(realpath "$1")
TIMING=${2:-realtime}
ROUNDS=${3:-3}
N=${4:-3}
PY=$PWD/.venv/bin/python
here=$PWD

medians() {  # medians DIR: "init ssh cpu" medians of one bench boot run in checkout DIR
    (cd "$1" && "$PY" -m harness.cli bench boot -n "$N" --timing "$TIMING") 2>&1 |
        awk -F'│' '/init_ready_s|ssh_ready_s|qemu_cpu_s/ {gsub(/ /, "", $4); printf "%s ", $4}'
}

echo "| round | checkout | guest init ready (s) | SSH ready (s) | QEMU CPU (s) |"
echo "| ---: | --- | ---: | ---: | ---: |"
for round in $(seq "$ROUNDS"); do
    # Which side goes first alternates: on 2026-12-06 20 pairs of boots in a fixed order had the second 0.29 s
    # faster (medians), and 16 pairs of the same two settings in alternating order no difference at all.
    sides=("$OTHER" "$here")
    (( round % 2 )) || sides=("$here" "$OTHER")
    for side in "${sides[@]}"; do
        read -r init ssh cpu <<<"$(medians "$side")"
        echo "| $round | $(git -C "$side" rev-parse --short HEAD) | ${init:-failed} | ${ssh:-failed} | ${cpu:-failed} |"
    done
done
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), timing $TIMING, $N boots per cell (medians), stock kernel, 2 GiB, 2 vCPUs," \
     "load average $(cut -d' ' -f1 /proc/loadavg) at the end on $(nproc) cores"
