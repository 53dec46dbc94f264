#!/usr/bin/env bash
# Lint throughput on a generated 10,000-object tree (release build, one thread).
# Usage: scripts/bench-lint.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec cargo bench --bench lint
