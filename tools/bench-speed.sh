#!/bin/bash
# Issue 21's speed figures, one run each, back to back: run it on an idle machine (realtime guests and wall
# times take the host's load).  Prints a Markdown table; the bundles and logs stay in OUT.
#
#   tools/bench-speed.sh [OUT]                       this checkout
#   BEFORE=/path/to/old/checkout tools/bench-speed.sh OUT
#                                                    also the bisect with that checkout's harness (its .venv)
#
# - boot to SSH-ready, stock kernel, realtime and icount (harness bench boot);
# - the 6-patch bisect of tests/data/series/fault-path-bisect (icount), after removing the candidates' cached
#   builds and worktrees (ccache and the good end's build kept, as on a developer's machine);
# - the reporting scenario (icount) on two of its kernels, 3 repetitions: every repetition booting, one
#   guest at a time (what runs did before issue 21), then the defaults (repetitions from the saved boot,
#   --jobs as the host allows);
# - the small nightly matrix (scenarios/nightly-small.yaml), --jobs 1, then the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-results/bench-speed}")
mkdir -p "$OUT"
H=.venv/bin/harness
CACHE=${BALLOON_TESTBED_CACHE:-$HOME/.cache/balloon-testbed}
rows=()

timed() {  # timed LABEL LOG CMD...: run CMD, log its output, add a row with its wall time and exit code
    local label=$1 log=$2 t0 rc=0
    shift 2
    t0=$(date +%s.%N)
    "$@" >"$log" 2>&1 || rc=$?
    rows+=("| $label | $(printf '%.0f' "$(echo "$(date +%s.%N) - $t0" | bc)") s | $rc | \`$(basename "$log")\` |")
    echo "bench-speed: $label: exit $rc" >&2
}

forget_bisect_builds() {  # the candidates' builds and worktrees go; the good end (base+zeroing-stats) stays
    python3 - "$CACHE/kernel" <<'EOF'
import json, pathlib, shutil, subprocess, sys
k = pathlib.Path(sys.argv[1])
for info in k.glob("builds/*/build.json"):
    if "fault-path-bisect" in json.loads(info.read_text()).get("spec", ""):
        key = info.parent.name
        shutil.rmtree(info.parent)
        (k / "trees" / f"{key}.ready").unlink(missing_ok=True)
        shutil.rmtree(k / "trees" / key, ignore_errors=True)
for src in k.glob("src/linux-*"):
    subprocess.run(["git", "-C", str(src), "worktree", "prune"], check=False)
EOF
}

bisect_scenario=$OUT/bisect.yaml
cat >"$bisect_scenario" <<'EOF'
name: bisect-bench
guest: {memory: 1G, cpus: 1}
qemu: {balloon: {free_page_reporting: true}, timing: icount}
steps: [{memtouch: 128M, phase: touch}]
EOF
patches=$OUT/patches
rm -rf "$patches" && mkdir -p "$patches"
for d in kernel_patches/* tests/data/series/*; do ln -s "$(realpath "$d")" "$patches/$(basename "$d")"; done  # as the tests do
bisect_args=(bisect "$bisect_scenario" --good base+zeroing-stats --bad base+zeroing-stats+fault-path-bisect
             --metric fault_in_ms@touch)

$H kernel build base+zeroing-stats >/dev/null 2>&1
timed "boot to SSH, stock, realtime (\`harness bench boot\`, 5 boots)" "$OUT/boot-realtime.log" $H bench boot -n 5
timed "boot to SSH, stock, icount (\`harness bench boot --timing icount\`, 3 boots)" "$OUT/boot-icount.log" \
    $H bench boot -n 3 --timing icount
if [ -n "${BEFORE:-}" ]; then
    forget_bisect_builds
    timed "6-patch bisect, $(git -C "$BEFORE" log -1 --format=%h)" "$OUT/bisect-before.log" \
        env BALLOON_TESTBED_PATCHES="$patches" "$BEFORE/.venv/bin/harness" "${bisect_args[@]}" --results "$OUT/before"
fi
forget_bisect_builds
timed "6-patch bisect, $(git log -1 --format=%h)" "$OUT/bisect.log" \
    env BALLOON_TESTBED_PATCHES="$patches" $H "${bisect_args[@]}" --results "$OUT/after"
reporting=(run scenarios/reporting.yaml --kernel baseline --kernel seed002 --reps 3)
timed "reporting scenario, 2 kernels x 3 reps, each booting, --jobs 1" "$OUT/reporting-before.log" \
    $H "${reporting[@]}" --repetitions-from boot --jobs 1 --results "$OUT/reporting"
timed "reporting scenario, 2 kernels x 3 reps, defaults" "$OUT/reporting.log" \
    $H "${reporting[@]}" --results "$OUT/reporting"
timed "small nightly (\`scenarios/nightly-small.yaml\`), --jobs 1" "$OUT/nightly-before.log" \
    $H nightly scenarios/nightly-small.yaml --jobs 1 --results "$OUT/nightly-jobs1"
timed "small nightly (\`scenarios/nightly-small.yaml\`), defaults" "$OUT/nightly.log" \
    $H nightly scenarios/nightly-small.yaml --results "$OUT/nightly"

echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, load average at the end $(cut -d' ' -f1 /proc/loadavg), one run each:"
echo
echo "| what | wall | exit | log |"
echo "| --- | ---: | ---: | --- |"
printf '%s\n' "${rows[@]}"
for f in boot-realtime boot-icount; do
    echo; echo "$f:"; grep -E "ssh_ready_s|qemu_cpu_s" "$OUT/$f.log" || true
done
echo; grep -h "first bad\|^bisect of" "$OUT"/bisect*.log || true
