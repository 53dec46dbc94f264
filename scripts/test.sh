#!/usr/bin/env bash
# tresor's one test command: starts the local registries (scripts/registry.sh), exports
# TRESOR_REGISTRY_* for the integration tests, then runs the whole test suite.
#
# Usage: scripts/test.sh [extra args for `cargo nextest run` / `cargo test`]
#   e.g. scripts/test.sh registry::auth     scripts/test.sh --no-fail-fast
# The registries keep running afterwards (the next run reuses them); stop them with
# `scripts/registry.sh stop`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/registry.sh start
eval "$(scripts/registry.sh env)"

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --all-targets "$@"
else
  echo "test.sh: cargo-nextest not found, falling back to cargo test" >&2
  exec cargo test --all-targets "$@"
fi
