#!/usr/bin/env bash
# Benchmark of the `tresor sync` host agent against the local plain registry:
#   - idle RSS (VmRSS from /proc/PID/status; target <= 16 MiB),
#   - CPU time per idle cycle (utime+stime from /proc/PID/stat over N idle cycles),
#   - time from `tresor push` returning to the directory switched, with --interval 1s.
# Every version is signed with a fresh cosign key (`tresor keygen`) and the agent verifies it
# with `--key`, as a real host agent does; UNSIGNED=1 measures `--allow-unsigned` instead.
#
# Usage: scripts/bench-sync.sh [IDLE_SECONDS (default 20)] [PUSHES (default 5)]
# Uses $TRESOR_BIN, else target/release/tresor (built with `cargo build --release` if absent;
# honours CARGO_TARGET_DIR).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
idle_secs="${1:-20}"
pushes="${2:-5}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin="${TRESOR_BIN:-$target_dir/release/tresor}"
if [[ ! -x "$bin" ]]; then
  cargo build --release --bin tresor
fi

host="${TRESOR_REGISTRY_PLAIN:-127.0.0.1:5001}"
# Reuse a registry already answering there (e.g. another checkout's); else start ours.
if ! curl -fs --max-time 2 "http://$host/v2/" >/dev/null 2>&1; then
  scripts/registry.sh start >/dev/null
  eval "$(scripts/registry.sh env)"
  host="${TRESOR_REGISTRY_PLAIN:-127.0.0.1:5001}"
fi

work="$(mktemp -d)"
agent=""
cleanup() {
  if [[ -n "$agent" ]] && kill -0 "$agent" 2>/dev/null; then kill "$agent"; wait "$agent" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

ref="oci://$host/tresor-bench/sync-$$:live"
export DOCKER_CONFIG="$work/docker"; mkdir -p "$DOCKER_CONFIG"
sign=() trust=(--allow-unsigned)
if [[ "${UNSIGNED:-0}" != 1 ]]; then
  export COSIGN_PASSWORD=bench
  "$bin" keygen --output-dir "$work" >/dev/null
  sign=(--sign-key "$work/cosign.key") trust=(--key "$work/cosign.pub")
fi
push_version() {
  local n="$1"
  local src="$work/src-$n"
  mkdir -p "$src/conf.d"
  for i in $(seq 1 20); do printf 'server%s { listen %s; version %s; }\n' "$i" "$((8000 + i))" "$n" >"$src/conf.d/site$i.conf"; done
  "$bin" push "$src" "$ref" --content files --overwrite --plain-http "${sign[@]}" \
    --source https://example.com/bench --revision "main@sha1:$(printf '%040d' "$n")" >/dev/null 2>>"$work/push.err"
}

push_version 1
"$bin" sync "$ref" --dir "$work/site" --interval 1s "${trust[@]}" --plain-http \
  --cache-dir "$work/cache" --status-file "$work/status.json" >"$work/agent.out" 2>"$work/agent.err" &
agent=$!
for _ in $(seq 1 500); do [[ -L "$work/site" ]] && break; sleep 0.02; done
[[ -L "$work/site" ]] || { echo "agent did not sync:"; cat "$work/agent.err"; exit 1; }

cycles() { sed -n 's/.*"cycles": *\([0-9]*\).*/\1/p' "$work/status.json"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
clk_tck="$(getconf CLK_TCK)"

sleep 3
c0="$(cycles)"; t0="$(cpu_ticks)"
sleep "$idle_secs"
c1="$(cycles)"; t1="$(cpu_ticks)"
# One read of the status file, so the four figures are of the same moment.
read -r rss_kib hwm_kib anon_kib file_kib < <(awk '{v[$1] = $2}
  END {print v["VmRSS:"], v["VmHWM:"], v["RssAnon:"], v["RssFile:"]}' "/proc/$agent/status")
idle_cycles=$((c1 - c0))
cpu_ms_per_cycle="$(awk -v t="$((t1 - t0))" -v hz="$clk_tck" -v n="$idle_cycles" 'BEGIN { if (n > 0) printf "%.2f", t * 1000 / hz / n; else print "n/a" }')"

echo "binary:                 $bin"
echo "trust:                  ${trust[*]}"
echo "idle RSS (VmRSS):       $((rss_kib / 1024)).$(( (rss_kib % 1024) * 10 / 1024 )) MiB ($rss_kib KiB; peak VmHWM $hwm_kib KiB; anonymous $anon_kib KiB, file-backed $file_kib KiB)"
echo "idle cycles measured:   $idle_cycles in ${idle_secs}s"
echo "CPU per idle cycle:     $cpu_ms_per_cycle ms (utime+stime, ${clk_tck} ticks/s resolution)"

times=()
for n in $(seq 2 $((pushes + 1))); do
  before="$(readlink "$work/site")"
  push_version "$n"
  start="$(date +%s%N)"
  while [[ "$(readlink "$work/site")" == "$before" ]]; do
    sleep 0.01
    if (( ($(date +%s%N) - start) > 10000000000 )); then echo "push $n not switched within 10 s"; cat "$work/agent.err"; exit 1; fi
  done
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  times+=("$ms")
  grep -q "version $n;" "$work/site/conf.d/site1.conf" || { echo "switched to the wrong content"; exit 1; }
done
sorted="$(printf '%s\n' "${times[@]}" | sort -n)"
echo "push -> switched (1s):  $(echo "$sorted" | tr '\n' ' ')ms (median $(echo "$sorted" | sed -n "$(( (pushes + 1) / 2 ))p") ms, max $(echo "$sorted" | tail -n1) ms)"
