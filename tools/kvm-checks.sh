#!/bin/sh
# The KVM path, end to end, as a user on a KVM runner types it.  Runs inside the KVM runner VM
# (`make test-kvm`: tests/kvm/test_kvm_path.py starts it and checks what it leaves in OUT).
# Each check's output goes to OUT/NAME.log and its exit status to OUT/NAME.rc; the bundle paths the
# commands print stay in those logs.  Every check runs even when an earlier one failed.
set -u
OUT=${1:?usage: tools/kvm-checks.sh OUT}
HARNESS=.venv/bin/harness
mkdir -p "$OUT"

check() {
    name=$1; shift
    echo "== $name: $*"
    start=$(date +%s)
    "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$rc" > "$OUT/$name.rc"
    echo "== $name: exit $rc after $(( $(date +%s) - start )) s"
    tail -n 3 "$OUT/$name.log"
}

check doctor $HARNESS doctor --refresh
check run-scenario make run-scenario RESULTS="$OUT/run-scenario"
check require-accel $HARNESS run scenarios/smoke.yaml --kernel stock --kernel base+zeroing-stats \
    --require-accel kvm --timing icount --results "$OUT/require-accel"

# The nightly workflow's own steps (.github/workflows/nightly.yml): plan, run-shard --require-accel kvm per
# shard, merge, report.
check plan $HARNESS plan scenarios/nightly-small.yaml --shards 2 --out "$OUT/plan.json"
for shard in $(python3 -c 'import json, sys; print(" ".join(s["id"] for s in json.load(open(sys.argv[1]))["shards"]))' "$OUT/plan.json"); do
    check "run-shard-$shard" $HARNESS run-shard "$OUT/plan.json" --shard "$shard" \
        --results "$OUT/shards/shard-$shard" --require-accel kvm
done
check merge $HARNESS merge "$OUT"/shards/shard-* --out "$OUT/merged"
check report $HARNESS report "$OUT/merged" --out "$OUT/report"
