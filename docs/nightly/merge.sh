#!/usr/bin/env bash
# The merge after a night's shards (docs/nightly/shard.sh), run once every shard has ended however
# it ended (Slurm `--dependency=afterany`, a Kubernetes Job after the Indexed Job, a GitHub Actions
# job with `if: always()`). Configured by the environment:
#   NIGHT_DIR  this night's folder (required); SHARDS how many shards (default 4)
#   KNOWN_OUT  the cumulative known root causes to update (optional): every night's merged findings,
#              which the next night passes as KNOWN
#   NANHUNT    the binary (default `nanhunt` on PATH)
# Writes $NIGHT_DIR/merged (findings.jsonl, root_causes.jsonl, errors.jsonl, reports). Exits 0 when
# every shard ran and none found a new root cause, 1 when one did (they are listed), 2 when a shard
# erred or never wrote its exit code (a lost or cancelled task), or the merge failed.
set -uo pipefail
: "${NIGHT_DIR:?set NIGHT_DIR}"
SHARDS="${SHARDS:-4}"
NANHUNT="${NANHUNT:-nanhunt}"
dirs=() worst=0
for ((i = 0; i < SHARDS; i++)); do
  out="$NIGHT_DIR/out-$i"
  rc=$(cat "$out/exit-code" 2>/dev/null || echo missing)
  case "$rc" in
    0) ;;
    1) [ "$worst" -lt 1 ] && worst=1 ;;
    *) echo "shard $i: exit code $rc (an error, or the task never finished)" >&2; worst=2 ;;
  esac
  [ -f "$out/findings.jsonl" ] && dirs+=("$out")
done
if [ "${#dirs[@]}" -eq 0 ]; then
  echo "no shard wrote findings.jsonl under $NIGHT_DIR" >&2
  exit 2
fi
rm -rf "$NIGHT_DIR/merged"
"$NANHUNT" merge "${dirs[@]}" --out "$NIGHT_DIR/merged" || exit 2
if [ -n "${KNOWN_OUT:-}" ]; then
  # The known root causes grow by this night's: merged into a new folder, then swapped in.
  rm -rf "$KNOWN_OUT.new"
  if [ -f "$KNOWN_OUT/findings.jsonl" ]; then
    "$NANHUNT" merge "$KNOWN_OUT" "$NIGHT_DIR/merged" --out "$KNOWN_OUT.new" >/dev/null || exit 2
  else
    mkdir -p "$(dirname "$KNOWN_OUT")" && cp -r "$NIGHT_DIR/merged" "$KNOWN_OUT.new" || exit 2
  fi
  rm -rf "$KNOWN_OUT.old" && { [ ! -e "$KNOWN_OUT" ] || mv "$KNOWN_OUT" "$KNOWN_OUT.old"; } && mv "$KNOWN_OUT.new" "$KNOWN_OUT" && rm -rf "$KNOWN_OUT.old" || exit 2
fi
if [ "$worst" -eq 1 ]; then
  echo "new root causes (not marked known in a shard's root_causes.jsonl):"
  cat "${dirs[@]/%//root_causes.jsonl}" | grep -v '"known":true' | grep -o '^{"scenario":"[^"]*","signature":"[0-9a-f]*"' | sort -u
fi
exit "$worst"
