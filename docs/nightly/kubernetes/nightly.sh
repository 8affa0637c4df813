#!/usr/bin/env bash
# Runs one night of nanhunt on Kubernetes: creates the Indexed hunt Job, waits until it has ended
# (Complete, or Failed: exit 1 in a shard is a finding), then creates the merge Job and exits with
# its exit code: 0 nothing new, 1 a new root cause, 2 a lost shard or an error. Run it nightly from
# wherever kubectl reaches the cluster (or from a CronJob with a service account allowed to create
# Jobs). Environment: NIGHT (default today's date), SEED (default the night's number of days since
# 1970), WAIT (most seconds to wait for the hunt, default 9000: its 1h, the shrink time and queueing).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NIGHT="${NIGHT:-$(date -u +%F)}"
SEED="${SEED:-$(($(date -u +%s) / 86400))}"
fill() { sed -e "s/@NIGHT@/$NIGHT/g" -e "s/@SEED@/$SEED/g" "$here/$1"; }
# Waits until a job has the condition Complete or Failed; prints which.
ended() {
  local start=$SECONDS state
  while [ $((SECONDS - start)) -lt "$2" ]; do
    state=$(kubectl get job "$1" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{"\n"}{end}' | grep -x 'Complete\|Failed' || true)
    [ -n "$state" ] && { echo "$state"; return 0; }
    sleep 10
  done
  echo "job $1 has not ended after $2 s" >&2
  return 1
}
fill hunt-job.yaml | kubectl create -f -
echo "hunt: $(ended "nanhunt-hunt-$NIGHT" "${WAIT:-9000}")"
fill merge-job.yaml | kubectl create -f -
ended "nanhunt-merge-$NIGHT" 1800 >/dev/null || exit 2
kubectl logs "job/nanhunt-merge-$NIGHT"
code=$(kubectl get pods -l "job-name=nanhunt-merge-$NIGHT" -o jsonpath='{.items[0].status.containerStatuses[0].state.terminated.exitCode}')
exit "${code:-2}"
