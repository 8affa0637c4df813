#!/usr/bin/env bash
# Root causes per hunt, before and after each fix (issue 27's closing figure).
# Usage: scenarios/bench/root_causes.sh BIN [SECONDS]   (BIN: a nanhunt binary; SECONDS: 10 by default)
# For every bundled real scenario that has a `_fix_` variant, hunts the base and each fix variant
# for SECONDS at --jobs 1 and prints a markdown table: the scenario, its root causes (base), the
# root causes of each fix variant, and how many of all those root causes a diagnosis rule explains
# (a root cause whose `mechanism.rule` in root_causes.jsonl is null is unexplained). Takes about
# 2 × SECONDS per fix variant; run it from anywhere.
set -euo pipefail
bin=$(realpath "$1")
secs=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
real=$here/../real
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# hunt FILE: prints "<root causes> <explained>" of a SECONDS hunt of FILE.
hunt() {
  local out=$tmp/$(basename "$1" .toml)
  "$bin" hunt "$1" --time "${secs}s" --jobs 1 --out "$out" > "$out.log" 2>&1 || true
  if [ -f "$out/root_causes.jsonl" ]; then
    jq -s '"\(length) \(map(select(.mechanism.rule != null)) | length)"' -r "$out/root_causes.jsonl"
  else
    echo "0 0"
  fi
}
echo "| scenario | root causes (base) | root causes (fix) | explained/total |"
echo "|---|---:|---|---:|"
for base in $(ls "$real"/*.toml | grep -v '_fix_' | sort); do
  name=$(basename "$base" .toml)
  fixes=$(ls "$real"/"${name}"_fix_*.toml 2>/dev/null | sort || true)
  [ -n "$fixes" ] || continue
  read -r n e <<< "$(hunt "$base")"
  total=$n explained=$e cells=()
  for fix in $fixes; do
    read -r fn fe <<< "$(hunt "$fix")"
    cells+=("$(basename "$fix" .toml | sed "s/^${name}_fix_//"): $fn")
    total=$((total + fn)) explained=$((explained + fe))
  done
  fixcol=$(IFS=';'; echo "${cells[*]}" | sed 's/;/, /g')
  echo "| $name | $n | $fixcol | $explained/$total |"
done
