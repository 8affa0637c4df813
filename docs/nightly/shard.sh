#!/usr/bin/env bash
# One shard of a nightly hunt: the command every recipe in docs/nightly/ runs (the Slurm array
# task, the Kubernetes Indexed Job's pod, the GitHub Actions matrix job). Configured by the
# environment:
#   SCENARIO   the base scenario (required)
#   NIGHT_DIR  this night's folder, on storage every shard and the merge see (required)
#   SHARD      this shard's index, 0-based (required: $SLURM_ARRAY_TASK_ID, $JOB_COMPLETION_INDEX, matrix.shard)
#   SHARDS     how many shards (default 4)
#   SEED       the night's seed (default 0; a scheduler passes the night's number)
#   TIME       search time (default 1h); MAX_RUNS, when set, a candidate budget instead (exact, so deterministic)
#   KNOWN      root causes already known: a previous night's merged or known/ folder (used when it exists)
#   HUNT_ARGS  more `nanhunt hunt` arguments (e.g. "--engine property --keep-data --jobs 2")
#   NANHUNT    the binary (default `nanhunt` on PATH)
# Writes $NIGHT_DIR/out-$SHARD (findings.jsonl, root_causes.jsonl, errors.jsonl, reports, and
# exit-code) and keeps the campaign in $NIGHT_DIR/corpus-$SHARD: a shard that is requeued, preempted
# or retried resumes it instead of starting again. Exits with the hunt's code: 0 nothing new, 1 a new
# root cause (a result, not a failure to retry), 2 an error.
set -uo pipefail
: "${SCENARIO:?set SCENARIO}" "${NIGHT_DIR:?set NIGHT_DIR}" "${SHARD:?set SHARD}"
SHARDS="${SHARDS:-4}"
NANHUNT="${NANHUNT:-nanhunt}"
out="$NIGHT_DIR/out-$SHARD"
corpus="$NIGHT_DIR/corpus-$SHARD"
mkdir -p "$out"
rm -f "$out/exit-code"
args=(hunt "$SCENARIO" --shard "$SHARD/$SHARDS" --seed "${SEED:-0}" --time "${TIME:-1h}" --corpus "$corpus" --out "$out")
[ -n "${MAX_RUNS:-}" ] && args+=(--max-runs "$MAX_RUNS")
[ -f "$corpus/state.json" ] && args+=(--resume)
[ -n "${KNOWN:-}" ] && [ -f "$KNOWN/findings.jsonl" ] && args+=(--known "$KNOWN")
# shellcheck disable=SC2206 # HUNT_ARGS is a list of words on purpose
[ -n "${HUNT_ARGS:-}" ] && args+=(${HUNT_ARGS})
echo "shard $SHARD/$SHARDS: $NANHUNT ${args[*]}"
"$NANHUNT" "${args[@]}"
rc=$?
echo "$rc" > "$out/exit-code"
exit "$rc"
