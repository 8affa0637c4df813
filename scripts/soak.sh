#!/usr/bin/env bash
# A soak of a nightly campaign: two workers (shards 0/2 and 1/2, each with its corpus) are killed
# with SIGKILL every KILL_EVERY seconds and resumed with --resume, until each has made its candidate
# budget. Beside them, the same two shards run once, uninterrupted: the reference. The soak passes
# when
#   - the two killed workers, merged, give exactly the reference's root causes, sites and counts
#     (no root cause lost, no hit counted twice or dropped: the property engine draws candidate k
#     from the seed and k alone, so the budget fixes the candidates);
#   - each corpus is within its cap after every kill and at the end (`nanhunt corpus prune` on a
#     copy finds nothing to prune);
#   - resident memory stays flat: no life of a worker peaks above twice the first life's peak + 16 MiB;
#   - at least one kill landed (a soak with none proves nothing).
# It prints the figures: runs, kills, resident memory (first, last, max sample, and the peak of each
# life), corpus size. Usage: scripts/soak.sh [NANHUNT_BINARY] (default target/debug/nanhunt, or
# $CARGO_TARGET_DIR's: the dev profile is optimized). Environment:
#   SOAK_SECONDS  about how long the soak should take (default 3600: the full hour); it sizes BUDGET
#   KILL_EVERY    seconds between a worker's kills (default 300); the two workers are killed half a
#                 period apart
#   BUDGET        candidate runs per worker (default: measured, so that the soak, sharing the machine
#                 with the reference, takes about SOAK_SECONDS)
#   SCENARIO      default scenarios/seeds/s004_ex3_bce_validation.toml; SEED default 5
#   CAP           the corpus cap, --corpus-max-entries (default 16, below what the campaign would keep)
#   SOAK_DIR      where everything goes (default a new /tmp/nanhunt-soak.*; kept, for the curve: rss.csv)
# Gives up (fails) if the soak runs past 3 × SOAK_SECONDS + 120 s. Run the full hour under `nice -n 19`
# on a shared machine.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(realpath "${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/nanhunt}")"
fail() { echo "soak: FAIL: $*" >&2; exit 1; }
# A failed check that lets the soak go on and print its figures; the soak fails at the end.
flag() { echo "soak: FAIL: $*" >&2; echo "$*" >>"$dir/failed"; }
[ -x "$bin" ] || fail "no nanhunt binary at $bin"
SOAK_SECONDS="${SOAK_SECONDS:-3600}" KILL_EVERY="${KILL_EVERY:-300}" CAP="${CAP:-16}" SEED="${SEED:-5}"
SCENARIO="${SCENARIO:-$repo/scenarios/seeds/s004_ex3_bce_validation.toml}"
dir="${SOAK_DIR:-$(mktemp -d /tmp/nanhunt-soak.XXXXXX)}"
mkdir -p "$dir"
rm -f "$dir/failed"
common=(hunt "$SCENARIO" --engine property --keep-data --seed "$SEED" --corpus-max-entries "$CAP")
long=(--time 24h --shrink-time 1h)
workers=(0 1)
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done' EXIT

if [ -z "${BUDGET:-}" ]; then
  # Two processes per core (a worker and its reference): each gets about half the rate measured alone.
  "$bin" "${common[@]}" --shard 0/2 --time 10s --shrink-time 5s --corpus "$dir/calibrate" --out "$dir/calibrate-out" >/dev/null 2>&1 || true
  rate=$(grep -o '"runs":[0-9]*' "$dir/calibrate/state.json" | head -1 | cut -d: -f2)
  BUDGET=$((rate * SOAK_SECONDS / 30))
  rm -rf "$dir/calibrate" "$dir/calibrate-out"
fi
[ "$BUDGET" -gt 0 ] || fail "a budget of $BUDGET runs"
echo "soak: $bin, $(basename "$SCENARIO"), 2 workers × $BUDGET runs, SIGKILL every ${KILL_EVERY}s, corpus cap $CAP entries, in $dir"

# The reference: both shards, uninterrupted, at the same time as the soak.
for w in "${workers[@]}"; do
  "$bin" "${common[@]}" --shard "$w/2" "${long[@]}" --max-runs "$BUDGET" --corpus "$dir/ref-corpus-$w" --out "$dir/ref-$w" >"$dir/ref-$w.log" 2>&1 &
  ref[w]=$!
  pids+=($!)
done

# Checks a worker's corpus is within its cap, on a copy (prune rewrites what it prunes).
cap_check() {
  rm -rf "$dir/cap-copy" && cp -r "$dir/corpus-$1" "$dir/cap-copy"
  local said
  said=$("$bin" corpus prune "$dir/cap-copy" --max-entries "$CAP") || flag "worker $1's corpus: corpus prune: $said"
  # "DIR: before N entries, B bytes; after N entries, B bytes": nothing to prune.
  local before="${said#*before }" after="${said#*after }"
  [ "${before%;*}" = "$after" ] || flag "worker $1's corpus is over its cap of $CAP entries: $said"
  echo "${after}"
}
start() {
  local w=$1 resume=()
  [ -f "$dir/corpus-$w/state.json" ] && resume=(--resume)
  "$bin" "${common[@]}" --shard "$w/2" "${long[@]}" --max-runs "$BUDGET" --corpus "$dir/corpus-$w" --out "$dir/soak-$w" "${resume[@]}" >>"$dir/soak-$w.log" 2>&1 &
  pid[w]=$!
  pids+=($!)
  life[w]=$((${life[w]:-0} + 1))
}
echo "seconds,worker,life,rss_kb" >"$dir/rss.csv"
t0=$SECONDS kills=0
for w in "${workers[@]}"; do
  start "$w"
  next_kill[w]=$((KILL_EVERY + w * KILL_EVERY / 2))
  done_rc[w]=
done
limit=$((3 * SOAK_SECONDS + 120))
while [ -z "${done_rc[0]}" ] || [ -z "${done_rc[1]}" ]; do
  sleep 1
  now=$((SECONDS - t0))
  [ "$now" -lt "$limit" ] || fail "still running after ${now}s (the limit is ${limit}s)"
  for w in "${workers[@]}"; do
    [ -z "${done_rc[w]}" ] || continue
    if ! kill -0 "${pid[w]}" 2>/dev/null; then
      rc=0 && wait "${pid[w]}" || rc=$?
      [ "$rc" -le 1 ] || fail "worker $w exited $rc (see $dir/soak-$w.log)"
      done_rc[w]=$rc
      echo "soak: ${now}s: worker $w finished its budget (exit $rc) in life ${life[w]}"
      continue
    fi
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/${pid[w]}/status" 2>/dev/null || true)
    [ $((now % 5)) -ne 0 ] || [ -z "$rss" ] || echo "$now,$w,${life[w]},$rss" >>"$dir/rss.csv"
    if [ "$now" -ge "${next_kill[w]}" ]; then
      kill -9 "${pid[w]}" 2>/dev/null || true
      wait "${pid[w]}" 2>/dev/null || true
      kills=$((kills + 1))
      next_kill[w]=$((now + KILL_EVERY))
      if [ -f "$dir/corpus-$w/state.json" ]; then
        echo "soak: ${now}s: killed worker $w (life ${life[w]}) at $(grep -o '"runs":[0-9]*' "$dir/corpus-$w/state.json" | head -1 | cut -d: -f2) saved runs; corpus $(cap_check "$w")"
      fi
      start "$w"
    fi
  done
done
took=$((SECONDS - t0))
for w in "${workers[@]}"; do
  rc=0 && wait "${ref[w]}" || rc=$?
  [ "$rc" -le 1 ] || fail "reference shard $w exited $rc (see $dir/ref-$w.log)"
done
[ "$kills" -gt 0 ] || fail "no kill landed in ${took}s: lower KILL_EVERY or raise BUDGET"
"$bin" merge "$dir/soak-0" "$dir/soak-1" --out "$dir/soak-merged" >/dev/null
"$bin" merge "$dir/ref-0" "$dir/ref-1" --out "$dir/ref-merged" >/dev/null
python3 - "$dir" "$BUDGET" <<'PY' || echo "counts" >>"$dir/failed"
import json, sys
d, budget = sys.argv[1], int(sys.argv[2])
def tally(f):
    return sorted((x["signature"], x["count"], tuple(sorted(x.get("findings", [])))) for x in map(json.loads, open(f)))
bad = False
for f in ("root_causes.jsonl", "findings.jsonl"):
    soak, ref = tally(f"{d}/soak-merged/{f}"), tally(f"{d}/ref-merged/{f}")
    if not ref:
        print(f"soak: FAIL: the reference found nothing: {f} checks nothing"); bad = True
    if soak != ref:
        bad = True
        print(f"soak: FAIL: {f}: the killed and resumed workers differ from the uninterrupted reference (signature, count, sites):")
        for s in sorted(set(soak) | set(ref)):
            if (s in soak) != (s in ref):
                print(f"  {'soak only' if s in soak else 'reference only'}: {s}")
        print(f"  hits: soak {sum(x[1] for x in soak)}, reference {sum(x[1] for x in ref)}")
for w in (0, 1):
    runs = json.load(open(f"{d}/corpus-{w}/state.json"))["runs"]
    if runs != budget:
        print(f"soak: FAIL: worker {w} made {runs} runs, not its budget of {budget}"); bad = True
sys.exit(1 if bad else 0)
PY
causes=$(wc -l <"$dir/ref-merged/root_causes.jsonl") sites=$(wc -l <"$dir/ref-merged/findings.jsonl")
for w in "${workers[@]}"; do echo "soak: worker $w's corpus at the end: $(cap_check "$w")"; done
# Resident memory: samples, and the peak of each life of each worker.
python3 - "$dir/rss.csv" <<'PY' || echo "memory" >>"$dir/failed"
import csv, sys
rows = [(int(r["seconds"]), int(r["worker"]), int(r["life"]), int(r["rss_kb"])) for r in csv.DictReader(open(sys.argv[1]))]
if not rows:
    print("soak: FAIL: no resident memory sample"); sys.exit(1)
mib = lambda kb: f"{kb / 1024:.1f} MiB"
print(f"soak: resident memory, {len(rows)} samples: first {mib(rows[0][3])}, last {mib(rows[-1][3])}, max {mib(max(r[3] for r in rows))}")
bad = False
for w in sorted({r[1] for r in rows}):
    peaks = {}
    for _, ww, life, kb in rows:
        if ww == w:
            peaks[life] = max(peaks.get(life, 0), kb)
    lives = sorted(peaks)
    print(f"soak: worker {w}'s peak per life: " + ", ".join(mib(peaks[l]) for l in lives))
    limit = 2 * peaks[lives[0]] + 16 * 1024
    if max(peaks.values()) > limit:
        print(f"soak: FAIL: worker {w}'s resident memory grew past {mib(limit)}"); bad = True
sys.exit(1 if bad else 0)
PY
[ ! -e "$dir/failed" ] || fail "in ${took}s, $kills kills: see above; everything is in $dir"
echo "soak: PASS in ${took}s: 2 workers × $BUDGET runs, $kills kills (SIGKILL, then --resume), $causes root causes over $sites sites, the same counts as the uninterrupted reference; rss.csv in $dir"
