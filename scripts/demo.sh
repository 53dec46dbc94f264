#!/usr/bin/env bash
# The main job on the embedded default, no registry needed: build tresor, make a signing key,
# push the example manifest tree signed into a local OCI layout, inspect and verify it, pull
# it back (verified before download) and compare.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

tresor_bin="${CARGO_TARGET_DIR:-$repo/target}/release/tresor"
if [[ ! -x "$tresor_bin" ]]; then
  echo "building tresor (release); the first build compiles ~400 crates and takes minutes" >&2
fi
# cargo's own progress stays visible: a silent first build looks like a hang.
cargo build --release --bin tresor
tresor="${CARGO_TARGET_DIR:-$repo/target}/release/tresor"
work="$repo/.tmp/demo"
rm -rf "$work"
mkdir -p "$work"

export COSIGN_PASSWORD="${COSIGN_PASSWORD-demo}"
echo "+ tresor keygen --output-dir $work/keys"
"$tresor" keygen --output-dir "$work/keys"

echo "+ tresor push testdata/manifests/app oci-layout:$work/layout:v1 --sign-key $work/keys/cosign.key"
ref="$("$tresor" push testdata/manifests/app "oci-layout:$work/layout:v1" \
  --sign-key "$work/keys/cosign.key" \
  --source https://example.com/acme/app --revision "main@sha1:$(printf '0%.0s' {1..40})")"
echo "$ref"

echo "+ tresor inspect oci-layout:$work/layout:v1"
"$tresor" inspect "oci-layout:$work/layout:v1"

echo "+ tresor verify $ref --key $work/keys/cosign.pub"
"$tresor" verify "$ref" --key "$work/keys/cosign.pub"

echo "+ tresor pull $ref --output $work/pulled --key $work/keys/cosign.pub"
"$tresor" pull "$ref" --output "$work/pulled" --key "$work/keys/cosign.pub"

echo "+ tresor diff testdata/manifests/app $ref"
"$tresor" diff testdata/manifests/app "$ref"
diff -r testdata/manifests/app "$work/pulled" && echo "pulled tree is identical to testdata/manifests/app"
