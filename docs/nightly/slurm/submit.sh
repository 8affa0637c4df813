#!/usr/bin/env bash
# Submits one night of nanhunt on Slurm: a job array of $SHARDS hunt tasks and a merge job that
# depends on it (afterany). Run it nightly (cron, scrontab) from a login node:
#   SCENARIO=scenarios/seeds/s000_ex1_bce_mlp.toml ROOT=/shared/nanhunt docs/nightly/slurm/submit.sh
# Environment: SCENARIO (required); ROOT, shared storage (default $PWD/nightly); NIGHT, the
# night's name (default today's date); SEED (default: the night's number of days since 1970);
# SHARDS (default 4); TIME or MAX_RUNS; HUNT_ARGS; NANHUNT (default `nanhunt` on PATH); SBATCH_ARGS,
# more sbatch options for both jobs (partition, account, time limit). The previous nights' root
# causes ($ROOT/known) are passed as --known, so only a new one fails the merge job; the merge adds
# this night's. Prints the two job ids: "ARRAY_ID MERGE_ID".
set -euo pipefail
: "${SCENARIO:?set SCENARIO}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="${ROOT:-$PWD/nightly}"
NIGHT="${NIGHT:-$(date -u +%F)}"
export SCENARIO SHARDS="${SHARDS:-4}" SEED="${SEED:-$(($(date -u +%s) / 86400))}"
export NIGHT_DIR="$ROOT/nights/$NIGHT" KNOWN="$ROOT/known" KNOWN_OUT="$ROOT/known" NIGHTLY="$(dirname "$here")"
export TIME="${TIME:-1h}" MAX_RUNS="${MAX_RUNS:-}" HUNT_ARGS="${HUNT_ARGS:-}" NANHUNT="${NANHUNT:-nanhunt}"
mkdir -p "$NIGHT_DIR"
cd "$NIGHT_DIR"
# shellcheck disable=SC2086 # SBATCH_ARGS is a list of words on purpose
array=$(sbatch --parsable ${SBATCH_ARGS:-} --export=ALL --array=0-$((SHARDS - 1)) "$here/hunt.sbatch")
array="${array%%;*}"
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_ARGS:-} --export=ALL --dependency=afterany:"$array" "$here/merge.sbatch")
echo "${array} ${merge%%;*}"
