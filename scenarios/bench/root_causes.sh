#!/usr/bin/env bash
# Root causes per hunt, before and after grouping by mechanism (issue 27's closing figure).
#
#   scenarios/bench/root_causes.sh BIN [SECONDS]
#
# Hunts, with the nanhunt binary BIN, for SECONDS (default 30) at --jobs 1 under `nice -n 10`,
# every bundled real scenario that fails as written (`[expect] outcome = "nonfinite"`) and every
# `_fix_` variant of one. For each hunt it reads root_causes.jsonl and prints a markdown row:
#   sites     the old-style root causes: distinct failure sites (phase, tensor, kind, dtype),
#             counted as the distinct site findings the groups' members name (`findings`);
#   groups    the root causes, one per mechanism;
#   explained the groups a diagnosis rule explains (`mechanism.rule` not null).
# Then the totals and the explained share. Hunts are timed, so counts vary a little from run to
# run (more on a busy machine: fewer runs, fewer sites). The hunts' folders are kept under
# $ROOT_CAUSES_OUT (default a fresh temporary folder). Takes about 1.25 × SECONDS per scenario
# (the search plus the shrink time): some 12 minutes at 30 s. Needs `jq`.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 BIN [SECONDS]" >&2
    exit 2
fi
bin=$(realpath "$1")
secs=${2:-30}
real=$(cd "$(dirname "$0")/../real" && pwd)
out=${ROOT_CAUSES_OUT:-$(mktemp -d /tmp/nanhunt-root-causes.XXXXXX)}
mkdir -p "$out"

scenarios=()
for f in "$real"/*.toml; do
    case "$(basename "$f")" in
        *_fix_*) scenarios+=("$f") ;;
        *) if grep -A3 '^\[expect\]' "$f" | grep -q 'outcome = "nonfinite"'; then scenarios+=("$f"); fi ;;
    esac
done

echo "| scenario | base fails | sites | groups | explained |"
echo "|---|:---:|---:|---:|---:|"
total_sites=0
total_groups=0
total_explained=0
for f in $(printf '%s\n' "${scenarios[@]}" | sort); do
    name=$(basename "$f" .toml)
    dir="$out/$name"
    rm -rf "$dir"
    # A hunt exits 1 when it finds something: that is its normal result here.
    nice -n 10 "$bin" hunt "$f" --time "${secs}s" --jobs 1 --out "$dir" >"$dir.log" 2>&1 || true
    fails=no
    # The base's own failure: non-finite, or a collapsed loss scale.
    grep -q '^the base scenario itself ' "$dir.log" && fails=yes
    sites=0 groups=0 explained=0
    if [ -f "$dir/root_causes.jsonl" ]; then
        sites=$(jq -s '[.[].findings[]] | unique | length' "$dir/root_causes.jsonl")
        groups=$(jq -s 'length' "$dir/root_causes.jsonl")
        explained=$(jq -s 'map(select(.mechanism.rule != null)) | length' "$dir/root_causes.jsonl")
    fi
    echo "| $name | $fails | $sites | $groups | $explained |"
    total_sites=$((total_sites + sites))
    total_groups=$((total_groups + groups))
    total_explained=$((total_explained + explained))
done
if [ "$total_groups" -gt 0 ]; then
    pct=$(awk -v e="$total_explained" -v t="$total_groups" 'BEGIN { printf "%.1f", 100 * e / t }')
else
    pct="n/a"
fi
echo "| **total** | | $total_sites | $total_groups | $total_explained ($pct%) |"
echo "hunts (${secs} s each, --jobs 1, nice -n 10) in $out"
