#!/bin/sh
# The KVM path, end to end, as a user on a KVM runner types it.  Runs inside the KVM runner VM
# (`make test-kvm`: tests/kvm/test_kvm_path.py starts it and checks what it leaves in OUT).
# Each check's output goes to OUT/NAME.log and its exit status to OUT/NAME.rc; the bundle paths the
# commands print stay in those logs.  Every check runs even when an earlier one failed.  Run again on the same
# OUT, it runs only the checks that have not passed.
set -u
OUT=${1:?usage: tools/kvm-checks.sh OUT}
HARNESS=.venv/bin/harness
mkdir -p "$OUT"

# Inside the KVM runner VM a nested guest now and then dies of the outer TCG's emulation, not of the code under
# test (harness/guest/runner_vm.py; tests/kvm/kvm_where.py lists the same signatures): such a check runs
# again, up to ATTEMPTS runs in all (one cell of the nightly matrix crashed in 3 of 4 runs on 2026-12-07).  On a
# host with KVM of its own nothing is repeated.
ATTEMPTS=3
EMULATION_CRASH='run failed: guest kernel failure|run failed: QEMU exited with code 0|run failed: guest did not boot within'

# An earlier attempt's log and results (a crash above, or a runner VM that died mid-check and was started
# again on the same OUT) go to OUT/attempts/NAME-N, so that what the tests read is the last attempt's alone.
set_aside() {
    name=$1; results=$2
    [ -e "$OUT/$name.log" ] || return 0
    n=1
    while [ -e "$OUT/attempts/$name-$n.log" ]; do n=$((n + 1)); done
    mkdir -p "$OUT/attempts"
    mv "$OUT/$name.log" "$OUT/attempts/$name-$n.log"
    rm -f "$OUT/$name.rc"
    if [ "$results" != - ] && [ -e "$results" ]; then mv "$results" "$OUT/attempts/$name-$n"; fi
}

# check NAME RESULTS COMMAND...: RESULTS is the directory the command writes its bundles to, or -.
# A check that passed in an earlier runner VM on this OUT is not run again.
check() {
    name=$1; results=$2; shift 2
    if [ "$(cat "$OUT/$name.rc" 2>/dev/null)" = 0 ]; then
        echo "== $name: passed in an earlier runner VM"
        return 0
    fi
    attempt=0
    while [ "$attempt" -lt "$ATTEMPTS" ]; do
        attempt=$((attempt + 1))
        set_aside "$name" "$results"
        echo "== $name: $*"
        start=$(date +%s)
        "$@" > "$OUT/$name.log" 2>&1
        rc=$?
        echo "$rc" > "$OUT/$name.rc"
        echo "== $name: exit $rc after $(( $(date +%s) - start )) s"
        tail -n 3 "$OUT/$name.log"
        if [ "$rc" != 0 ] && [ "$attempt" -lt "$ATTEMPTS" ] && [ "${BALLOON_TESTBED_KVM_RUNNER:-}" = 1 ] &&
            grep -Eq "$EMULATION_CRASH" "$OUT/$name.log"; then
            echo "== $name: a nested guest died under the runner VM's emulation; running the check again"
            continue
        fi
        break
    done
}

check doctor - $HARNESS doctor --refresh
check run-scenario "$OUT/run-scenario" make run-scenario RESULTS="$OUT/run-scenario"
check require-accel "$OUT/require-accel" $HARNESS run scenarios/smoke.yaml --kernel stock --kernel base+zeroing-stats \
    --require-accel kvm --timing icount --results "$OUT/require-accel"

# The nightly workflow's own steps (.github/workflows/nightly.yml): plan, run-shard --require-accel kvm per
# shard, merge, report.
check plan - $HARNESS plan scenarios/nightly-small.yaml --shards 2 --out "$OUT/plan.json"
for shard in $(python3 -c 'import json, sys; print(" ".join(s["id"] for s in json.load(open(sys.argv[1]))["shards"]))' "$OUT/plan.json"); do
    check "run-shard-$shard" "$OUT/shards/shard-$shard" $HARNESS run-shard "$OUT/plan.json" --shard "$shard" \
        --results "$OUT/shards/shard-$shard" --require-accel kvm
done
check merge "$OUT/merged" $HARNESS merge "$OUT"/shards/shard-* --out "$OUT/merged"
check report "$OUT/report" $HARNESS report "$OUT/merged" --out "$OUT/report"
