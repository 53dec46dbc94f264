#!/usr/bin/env bash
# The idle puller: the real tresor-puller (release build) against the in-process API double
# with 100 ArtifactSyncs from the local plain registry (127.0.0.1:5001); prints its RSS and
# the registry and API requests per idle cycle per ArtifactSync (see benches/puller_idle.rs).
# Usage: [SYNCS=100] [INTERVAL=10] [IDLE_CYCLES=3] [WATCH_DRIFT=0] scripts/bench-puller.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
host="${TRESOR_REGISTRY_PLAIN:-127.0.0.1:5001}"
if ! curl -fs --max-time 2 "http://$host/v2/" >/dev/null 2>&1; then
  scripts/registry.sh start >/dev/null
fi
eval "$(scripts/registry.sh env)"
exec cargo bench --bench puller_idle
