#!/usr/bin/env bash
# Diagnosis coverage: the share of a hunt's root causes that a diagnosis rule explains.
#
#   scenarios/bench/coverage.sh BIN [SECONDS]
#
# Hunts, with the nanhunt binary BIN, each base for SECONDS (default 10) at --jobs 1:
# every scenario in scenarios/real/ without `_fix_` in its name, every scenarios/diagnosis/*.toml,
# and the bundled bases with recurrent, norm and pooling layers (listed in EXTRA below). It reads
# each hunt's root_causes.jsonl (a root cause is explained when its mechanism has a rule) and
# prints per base the root causes and how many are explained, then the total coverage.
# The hunts' folders are kept under $COVERAGE_OUT (default a fresh temporary folder).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 BIN [SECONDS]" >&2
    exit 2
fi
bin=$(realpath "$1")
secs=${2:-10}
here=$(cd "$(dirname "$0")/../.." && pwd)
out=${COVERAGE_OUT:-$(mktemp -d /tmp/nanhunt-coverage.XXXXXX)}
mkdir -p "$out"

EXTRA="seeds/s001_ex1_rnn_adam.toml seeds/s004_ex1_simple_rnn_adam.toml layers/gru_unscaled_targets_sgd.toml
layers/conv1d_accumulate_sum.toml layers/normalize_zero_rows_f16.toml layers/softsign_f16.toml"

bases=()
for f in "$here"/scenarios/real/*.toml; do
    case "$(basename "$f")" in *_fix_*) ;; *) bases+=("$f") ;; esac
done
for f in "$here"/scenarios/diagnosis/*.toml; do bases+=("$f"); done
for f in $EXTRA; do bases+=("$here/scenarios/$f"); done

total=0
explained=0
printf '%-48s %6s %9s\n' base causes explained
for f in "${bases[@]}"; do
    name=$(basename "$(dirname "$f")")/$(basename "$f" .toml)
    dir="$out/${name//\//__}"
    rm -rf "$dir"
    # A hunt exits 1 when it finds something: that is its normal result here.
    "$bin" hunt "$f" --time "${secs}s" --jobs 1 --out "$dir" >"$dir.log" 2>&1 || true
    n=0
    e=0
    if [ -f "$dir/root_causes.jsonl" ]; then
        n=$(jq -s 'length' "$dir/root_causes.jsonl")
        e=$(jq -s 'map(select(.mechanism.rule != null)) | length' "$dir/root_causes.jsonl")
    fi
    printf '%-48s %6d %9d\n' "$name" "$n" "$e"
    total=$((total + n))
    explained=$((explained + e))
done
if [ "$total" -gt 0 ]; then
    pct=$(awk -v e="$explained" -v t="$total" 'BEGIN { printf "%.1f", 100 * e / t }')
else
    pct="n/a"
fi
echo "coverage: $explained of $total root causes explained ($pct%); hunts in $out"
