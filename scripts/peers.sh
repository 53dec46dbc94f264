#!/usr/bin/env bash
# The real tools tresor's interop tests run against, built from Go modules at the versions
# testenv/peers/<NAME>/go.mod pins (nothing but Go modules from the module proxy, checked
# against go.sum):
#
#   cosign     github.com/sigstore/cosign/v2 (cmd/cosign)
#   cosign-v3  github.com/sigstore/cosign/v3 (cmd/cosign)
#   oras       oras.land/oras (cmd/oras)
#   crane      github.com/google/go-containerregistry (cmd/crane)
#   flux-oci   testenv/peers/flux: ~50 lines on Flux's github.com/fluxcd/pkg/oci, the
#              library of `flux push artifact` / `flux pull artifact` (needs Go 1.27:
#              built with GOTOOLCHAIN=go1.27.3, which the go command fetches from the proxy)
#   sops       github.com/getsops/sops/v3 (cmd/sops): encrypts the SOPS fixtures tresor decrypts
#
# Usage: scripts/peers.sh path NAME    print the binary's absolute path (building it first)
#        scripts/peers.sh build [NAME…] build (or find cached) every peer, or those named
#        scripts/peers.sh list          the peer names
#
# Binaries are cached outside the repository in
# ${TRESOR_TESTENV_CACHE:-~/.cache/tresor/testenv}/peers/<NAME>-<hash of its module>/, so
# a second run (and a second checkout) builds nothing. Concurrent calls wait on one lock
# per peer, so tests running in parallel build each peer once.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$repo/testenv/peers"
all=(cosign cosign-v3 oras crane flux-oci sops)

die() { echo "peers.sh: $*" >&2; exit 2; }

# module directory, package and Go toolchain of a peer
module_of() {
  case "$1" in
    cosign) echo "cosign github.com/sigstore/cosign/v2/cmd/cosign local" ;;
    cosign-v3) echo "cosign-v3 github.com/sigstore/cosign/v3/cmd/cosign local" ;;
    oras) echo "oras oras.land/oras/cmd/oras local" ;;
    crane) echo "crane github.com/google/go-containerregistry/cmd/crane local" ;;
    flux-oci) echo "flux . go1.27.3" ;;
    sops) echo "sops github.com/getsops/sops/v3/cmd/sops local" ;;
    *) die "unknown peer ${1:-} (one of: ${all[*]})" ;;
  esac
}

bin_of() {
  local name="$1" dir sum
  read -r dir _ _ <<<"$(module_of "$name")"
  sum="$(cat "$peers/$dir"/go.mod "$peers/$dir"/go.sum "$peers/$dir"/*.go | sha256sum | cut -c1-16)"
  echo "${TRESOR_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tresor/testenv}/peers/$name-$sum/$name"
}

build() {
  local name="$1" dir package toolchain bin tmp start
  read -r dir package toolchain <<<"$(module_of "$name")"
  bin="$(bin_of "$name")"
  [[ -x "$bin" ]] && return 0
  command -v go >/dev/null 2>&1 || die "go not found: the peers are built from testenv/peers/ with Go ≥ 1.26"
  mkdir -p "$(dirname "$bin")"
  exec 9>"$(dirname "$bin")/.lock"
  flock 9
  if [[ ! -x "$bin" ]]; then
    echo "peers.sh: building $name from testenv/peers/$dir (once; cosign takes a few minutes on 2 cores)" >&2
    start=$SECONDS
    tmp="$bin.tmp.$$"
    (cd "$peers/$dir" && GOTOOLCHAIN="$toolchain" GOFLAGS=-mod=readonly \
      go build -trimpath -ldflags=-s -o "$tmp" "$package")
    mv "$tmp" "$bin"
    echo "peers.sh: built $name in $((SECONDS - start))s" >&2
  fi
  exec 9>&-
}

case "${1:-}" in
  path)
    [[ -n "${2:-}" ]] || die "usage: $0 path NAME"
    build "$2"
    bin_of "$2"
    ;;
  build)
    shift
    names=("$@")
    ((${#names[@]} > 0)) || names=("${all[@]}")
    for name in "${names[@]}"; do build "$name"; done
    ;;
  list) printf '%s\n' "${all[@]}" ;;
  *) die "usage: $0 path NAME | build [NAME…] | list" ;;
esac
