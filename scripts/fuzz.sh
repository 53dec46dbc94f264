#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after the other,
# at the lowest CPU priority, and prints one summary line per target. Installs what it needs
# (the nightly toolchain, cargo-fuzz), like scripts/test.sh does for cargo-nextest.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   scripts/fuzz.sh              every target, 60 s each
#   scripts/fuzz.sh 600          10 minutes each (the campaign issue 12 asks for)
#   scripts/fuzz.sh 30 extract   one target
# Working corpora grow in fuzz/corpus/<target>/ (seeded from fuzz/seeds/ and testdata/),
# crashes land in fuzz/artifacts/<target>/, logs in fuzz/logs/; none of them is committed.
# Exits 1 when a target crashed (naming the artifact file), 2 on a setup error.
# See docs/fuzzing.md for what each target checks.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

seconds="${1:-60}"
shift || true
all_targets=(reference extract oci_manifest signature trust_policy yaml_fast_vs_libyaml)
if (($# > 0)); then targets=("$@"); else targets=("${all_targets[@]}"); fi
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number, got $seconds" >&2; exit 2; }

# Largest input per target: big enough for the seeds, small enough to keep runs fast.
declare -A max_len=(
  [reference]=1024 [extract]=65536 [oci_manifest]=16384 [signature]=16384
  [trust_policy]=8192 [yaml_fast_vs_libyaml]=16384
)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: installing the nightly toolchain (cargo fuzz needs it)" >&2
  rustup toolchain install nightly --profile minimal >&2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (once; about a minute)" >&2
  cargo install cargo-fuzz --locked --quiet
fi

# One build for all targets: release with debug assertions, AddressSanitizer (libyaml's
# port and the compression code have unsafe code of their own).
nice -n 19 cargo +nightly fuzz build >&2

# Seed corpora: the committed seeds plus fixtures from testdata/ (with the mode byte the
# target expects first). Copying again is harmless: libFuzzer keys inputs by content.
seed() { # seed TARGET PREFIX-BYTE-OR-EMPTY FILE...
  local target="$1" prefix="$2"
  shift 2
  local f
  for f in "$@"; do
    [[ -f "$f" ]] || continue
    local out="fuzz/corpus/$target/testdata-$(echo "$f" | tr '/' '_')"
    if [[ -n "$prefix" ]]; then
      { printf "\\x$prefix"; cat "$f"; } >"$out"
    else
      cp "$f" "$out"
    fi
  done
}
for t in "${all_targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  cp fuzz/seeds/"$t"/* "fuzz/corpus/$t/"
done
mkdir -p fuzz/logs
shopt -s nullglob globstar
seed oci_manifest "" testdata/cosign/legacy/*/manifest.json
seed signature 03 testdata/cosign/bundles/bundle_v03.json
seed signature 06 testdata/cosign/bundles/trusted_root.json
seed trust_policy 00 testdata/policy/trust-policy.yaml
seed trust_policy 02 testdata/lint/policy.yaml
seed yaml_fast_vs_libyaml "" testdata/manifests/**/*.yaml testdata/lint/**/*.yaml

status=0
for t in "${targets[@]}"; do
  [[ -n "${max_len[$t]:-}" ]] || { echo "fuzz.sh: unknown target $t" >&2; exit 2; }
  log="fuzz/logs/$t.log"
  rc=0
  nice -n 19 cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -max_len="${max_len[$t]}" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  # The last status line, e.g. "#123456 DONE cov: 2345 ft: 6789 corp: 321/45Kb ...".
  cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -1 || true)
  artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
  if ((rc != 0)) || [[ -n "$artifact" ]]; then
    status=1
    echo "fuzz: $t: CRASH after ${runs:-?} runs: ${artifact:-no artifact (exit $rc)}; see $log"
  else
    echo "fuzz: $t: ${seconds}s, ${runs:-?} runs (${rate:-?}/s), ${cov:-no coverage line}, 0 crashes"
  fi
done
exit "$status"
