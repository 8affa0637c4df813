#!/usr/bin/env bash
# The Slurm recipe (docs/nightly/slurm/) on a real, one-node Slurm: brings up munged, slurmctld and
# slurmd on this machine (Debian's munge and slurm-wlm packages; as root, no systemd, everything
# under a temporary folder, ports 16817-16818), submits two nights of a bundled scenario with a
# candidate budget, and checks:
#   1. the merged root causes and counts of the four array tasks equal one unsharded campaign's over
#      the same candidates (the property engine draws candidate k from the seed and k alone);
#   2. the merge job fails (exit 1) on the first night, which finds new root causes;
#   3. a second night with the first's root causes as --known makes its runs, finds them all known,
#      and its merge job exits 0.
# Fails, with the reason, when the scheduler cannot start: it never passes vacuously. Every wait
# has a timeout, and the daemons are stopped on exit. Usage: .ci/slurm_test.sh [NANHUNT_BINARY]
# (default target/debug/nanhunt, or $CARGO_TARGET_DIR's: the dev profile is optimized). Takes about 20 s.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/nanhunt}"
bin="$(realpath "$bin")"
fail() { echo "slurm_test: FAIL: $*" >&2; exit 1; }
[ -x "$bin" ] || fail "no nanhunt binary at $bin"
for cmd in munged slurmctld slurmd sbatch squeue sinfo sacct scontrol; do
  command -v "$cmd" >/dev/null || fail "$cmd is not installed (apt-get install slurm-wlm munge)"
done
[ "$(id -u)" -eq 0 ] || fail "the one-node Slurm runs its daemons as root: run as root"
work="$(mktemp -d /tmp/nanhunt-slurm.XXXXXX)"
pids=()
stop() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    echo "--- slurmctld log"; tail -n 20 "$work/slurmctld.log" 2>/dev/null
    echo "--- slurmd log"; tail -n 20 "$work/slurmd.log" 2>/dev/null
    for f in "$work"/root/nights/*/*.out; do [ -f "$f" ] && { echo "--- $f"; tail -n 15 "$f"; }; done
  fi >&2
  rm -rf "$work"
}
trap stop EXIT
# Waits at most $1 seconds for the command after it to succeed.
wait_for() {
  local limit=$1 start=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    [ $((SECONDS - start)) -lt "$limit" ] || return 1
    sleep 1
  done
}

# munge, with its own key and socket.
mkdir -p "$work/munge" "$work/state" "$work/spool"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$work/munge" && chmod 400 "$work/munge/munge.key"
munged --force --foreground --key-file="$work/munge/munge.key" --socket="$work/munge/socket" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed" >>"$work/daemons.log" 2>&1 &
pids+=($!)
wait_for 20 test -S "$work/munge/socket" || fail "munged did not start in 20 s: $(tail -n 5 "$work/munge/munged.log" 2>/dev/null)"

host="$(hostname -s)"
cpus="$(nproc)"
export SLURM_CONF="$work/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=nanhunt-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$work/munge/socket
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=ci Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -D -i >>"$work/daemons.log" 2>&1 &
pids+=($!)
slurmd -D >>"$work/daemons.log" 2>&1 &
pids+=($!)
idle() { sinfo -h -N -o '%T' | grep -qx idle; }
wait_for 60 idle || fail "the Slurm node did not come up idle in 60 s: $(sinfo -h -N -o '%N %T %E' 2>&1)"
echo "slurm_test: one-node Slurm up ($(sinfo -V), $cpus CPUs)"

# Waits for a job (all tasks of an array) to leave the queue, at most $2 seconds.
wait_job() {
  wait_for "$2" sh -c "[ -z \"\$(squeue -h -j $1 2>/dev/null)\" ]" || fail "job $1 still queued or running after $2 s: $(squeue -j "$1" 2>&1)"
}
# The state and exit code Slurm recorded for a job, e.g. "COMPLETED 0:0".
job_state() { scontrol -o show job "$1" | sed -n 's/.*JobState=\([A-Z_]*\) .*ExitCode=\([0-9:]*\).*/\1 \2/p'; }

scenario="$repo/scenarios/seeds/s004_ex3_bce_validation.toml"
budget=1000 shards=4
export SCENARIO="$scenario" ROOT="$work/root" SEED=5 SHARDS=$shards MAX_RUNS=$budget TIME=10m
export HUNT_ARGS="--engine property --keep-data --shrink-time 10m" NANHUNT="$bin"
# Submits night $1 with submit.sh, waits for its jobs, and checks its merge job ended as $2 ("STATE EXIT").
night() {
  local array merge state
  read -r array merge < <(NIGHT="$1" "$repo/docs/nightly/slurm/submit.sh")
  echo "slurm_test: $1: array job $array, merge job $merge"
  wait_job "$array" 240
  wait_job "$merge" 120
  state=$(job_state "$merge")
  [ "$state" = "$2" ] || fail "$1's merge job should end '$2', got '$state'"
}
night night-1 "FAILED 1:0" # new root causes

# The same candidates, one campaign, no scheduler.
"$bin" hunt "$scenario" --engine property --keep-data --seed 5 --max-runs $((budget * shards)) --time 10m --shrink-time 10m --out "$work/one" >/dev/null || [ $? -eq 1 ] || fail "the unsharded campaign erred"
# Signature and count of each line of a findings.jsonl or root_causes.jsonl
# (with a root cause's sites), sorted.
tally() {
  python3 -c 'import json, sys
for l in sorted(json.dumps([d["signature"], d["count"], sorted(d.get("findings", []))]) for d in map(json.loads, open(sys.argv[1]))): print(l)' "$1"
}
merged="$work/root/nights/night-1/merged"
for f in root_causes.jsonl findings.jsonl; do
  [ -s "$work/one/$f" ] || fail "the campaign found nothing: no check of $f"
  diff <(tally "$work/one/$f") <(tally "$merged/$f") || fail "$f: the four array tasks, merged, differ from one campaign over the same candidates (above)"
done
causes=$(wc -l < "$merged/root_causes.jsonl")
echo "slurm_test: night 1: the merged $causes root causes and their counts equal one campaign's over the same $((budget * shards)) candidates"

night night-2 "COMPLETED 0:0" # nothing new: night 1's root causes are --known
for ((i = 0; i < shards; i++)); do
  out="$work/root/nights/night-2/out-$i"
  [ "$(cat "$out/exit-code")" = 0 ] || fail "night 2's shard $i exited $(cat "$out/exit-code")"
  grep -q '"runs":'"$budget"',' "$work/root/nights/night-2/corpus-$i/state.json" || fail "night 2's shard $i did not make its $budget runs"
  if grep -qv '"known":true' "$out/root_causes.jsonl"; then fail "night 2's shard $i has a new root cause"; fi
done
known=$(grep -c '"known":true' "$work"/root/nights/night-2/out-*/root_causes.jsonl | awk -F: '{s += $2} END {print s}')
[ "$known" -gt 0 ] || fail "night 2 found no root cause at all, so --known was not tested"
echo "slurm_test: night 2: $((budget * shards)) runs, $known root cause(s) over the shards, all known; merge job exit 0"
echo "slurm_test: PASS"
