#!/usr/bin/env bash
# tresor's one test command, on a fresh Debian 12 machine too: installs what the tests need
# (Debian packages, cargo-nextest), starts the local registries (scripts/registry.sh) and
# the real Kubernetes control plane (scripts/cluster.sh; its first build takes minutes),
# builds the interop peers (scripts/peers.sh), exports their settings, then runs the whole
# test suite.
#
# Usage: scripts/test.sh [extra args for `cargo nextest run` / `cargo test`]
#   e.g. scripts/test.sh registry::auth     scripts/test.sh --no-fail-fast
# The registries and the cluster keep running afterwards (the next run reuses them); stop
# them with `scripts/registry.sh stop` and `scripts/cluster.sh stop`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# Debian packages: the registry, skopeo (interop), htpasswd, openssl, curl, age (keys for the
# SOPS tests); installed as root or with password-less sudo, else the command to run is
# printed.
packages=(docker-registry skopeo apache2-utils openssl curl ca-certificates age)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo -n"
  if [[ -z "$sudo" ]] || $sudo true 2>/dev/null; then
    echo "test.sh: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing Debian packages; install them with:" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 2
  fi
fi

# A debug build: it only runs the tests, and builds in ~3 minutes instead of ~10.
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest (once; about 3 minutes)" >&2
  cargo install --locked --debug --quiet cargo-nextest ||
    echo "test.sh: cargo-nextest could not be installed; using cargo test" >&2
fi

scripts/registry.sh start
eval "$(scripts/registry.sh env)"
scripts/cluster.sh start
eval "$(scripts/cluster.sh env)"
# The real tools of the interop tests (cosign, oras, crane, Flux's OCI library, sops), built
# once from testenv/peers/ and cached; building them here keeps the tests from waiting on it.
scripts/peers.sh build
echo "test.sh: the registries and the cluster stay up; stop them with" \
  "\`scripts/registry.sh stop\` and \`scripts/cluster.sh stop\`" >&2

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --all-targets "$@"
else
  exec cargo test --all-targets "$@"
fi
