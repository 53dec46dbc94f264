#!/usr/bin/env bash
# Kubernetes apply throughput: 1,000 objects against the in-process API double through a
# real kube::Client (release build). Usage: scripts/bench-apply.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --bench kube_apply
