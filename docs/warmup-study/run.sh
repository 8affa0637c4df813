#!/usr/bin/env bash
# Rerun the warmup study (README.md beside this file): for each file, learning rate and
# warmup length, the fraction of seeds 0..15 that go non-finite, and seed 0's mean training
# loss over its first and last 32 steps (blank when it went non-finite).
# Usage: docs/warmup-study/run.sh [path to the nanhunt binary]   (about 10 minutes on 2 cores)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
nanhunt=${1:-$here/../../target/release/nanhunt}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
study() { # file (from this folder) steps "lrs" "warmups"
  local file=$1 steps=$2
  for lr in $3; do for wu in $4; do
    sed -e "s/^lr = .*/lr = $lr/" -e "s/^warmup_steps = .*/warmup_steps = $wu/" \
        -e "s/^decay_steps = .*/decay_steps = $((steps - wu))/" "$here/$file" > "$tmp/s.toml"
    rate=$({ "$nanhunt" run "$tmp/s.toml" --seeds 0..16 || true; } | head -1 | sed -E 's/.*: ([0-9]+ of [0-9]+) seeds.*/\1/')
    "$nanhunt" run "$tmp/s.toml" --trace "$tmp/t.csv" > /dev/null || true
    loss=$(awk -F, -v n="$steps" 'NR > 1 { l[NR-1] = $4 } END {
      if (NR - 1 < n) { print "" ; exit } for (i = 1; i <= 32; i++) { a += l[i]; b += l[n-32+i] }
      printf "%.3f → %.3f", a / 32, b / 32 }' "$tmp/t.csv")
    printf '%-40s lr %-5s warmup %-3s  non-finite %-9s seed 0 loss %s\n' "$(basename "${file%.toml}")" "$lr" "$wu" "$rate" "$loss"
  done; done
}
# The scenario pair is the regression study at lr 0.02: its fix file, with lr and warmup rewritten.
study ../../scenarios/real/fairseq282_postln_no_warmup_fix_warmup.toml 320 "0.01 0.02 0.03 0.1" "0 100"
study postln_lm.toml 128 "0.1 0.3 0.4 0.5" "0 32"
