#!/usr/bin/env bash
# Benchmark of registry webhooks for the `tresor sync` host agent (docs/webhooks.md): a
# Distribution registry of its own (Debian's docker-registry) configured to notify the
# agent, the agent at --interval 10m, then PUSHES pushes of a new version of the followed
# tag; prints the time from `tresor push` returning to the directory switched, per push and
# the median and maximum (target: at most 2 s).
#
# Usage: scripts/bench-webhook.sh [PUSHES (default 10)]
# Uses $TRESOR_BIN, else target/release/tresor (built with `cargo build --release` if absent;
# honours CARGO_TARGET_DIR).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
pushes="${1:-10}"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
bin="${TRESOR_BIN:-$target_dir/release/tresor}"
if [[ ! -x "$bin" ]]; then
  cargo build --release --bin tresor
fi
registry_bin="${TRESOR_REGISTRY_BIN:-docker-registry}"
command -v "$registry_bin" >/dev/null || { echo "bench-webhook.sh: $registry_bin not found (apt-get install docker-registry)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$secret" >"$work/secret"
registry_port="$(free_port)"
hook_port="$(free_port)"
cat >"$work/config.yml" <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/storage
http:
  addr: 127.0.0.1:$registry_port
  secret: bench-webhook
notifications:
  endpoints:
    - name: tresor
      url: http://127.0.0.1:$hook_port/hooks/distribution
      headers:
        Authorization: [Bearer $secret]
      timeout: 2s
      threshold: 3
      backoff: 1s
YAML
"$registry_bin" serve "$work/config.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -fs --max-time 1 "http://127.0.0.1:$registry_port/v2/" >/dev/null && break; sleep 0.1; done

ref="oci://127.0.0.1:$registry_port/bench/webhook:live"
export DOCKER_CONFIG="$work/docker"; mkdir -p "$DOCKER_CONFIG"
push_version() {
  local n="$1" src="$work/src-$1"
  mkdir -p "$src"
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  version: "%s"\n' "$n" >"$src/app.yaml"
  "$bin" push "$src" "$ref" --overwrite --plain-http \
    --source https://example.com/bench --revision "main@sha1:$(printf '%040d' "$n")" >/dev/null 2>&1
}

push_version 0
"$bin" sync "$ref" --dir "$work/site" --interval 10m --allow-unsigned --plain-http \
  --cache-dir "$work/cache" --webhook-addr "127.0.0.1:$hook_port" \
  --webhook-secret-file "$work/secret" >"$work/agent.out" 2>"$work/agent.err" &
pids+=($!)
for _ in $(seq 1 500); do [[ -f "$work/site/app.yaml" ]] && break; sleep 0.02; done
[[ -f "$work/site/app.yaml" ]] || { echo "agent did not sync:"; cat "$work/agent.err"; exit 1; }

times=()
for n in $(seq 1 "$pushes"); do
  push_version "$n"
  start="$(date +%s.%N)"
  for _ in $(seq 1 1500); do
    grep -q "version: \"$n\"" "$work/site/app.yaml" 2>/dev/null && break
    sleep 0.01
  done
  grep -q "version: \"$n\"" "$work/site/app.yaml" || { echo "push $n not synced within 15 s; agent and registry logs:"; tail -n 20 "$work/agent.err"; tail -n 20 "$work/registry.log"; exit 1; }
  t="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')"
  times+=("$t")
  printf 'push %2d → synced: %.3f s\n' "$n" "$t"
  sleep 1
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "bench-webhook: %d pushes at --interval 10m: median %.3f s, max %.3f s (target <= 2 s)\n", NR, a[int((NR+1)/2)], a[NR]}'
