#!/usr/bin/env bash
# The main job on the embedded default, no registry needed: build tresor, push the example
# manifest tree into a local OCI layout, inspect it, pull it back and compare.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

cargo build --release --quiet
tresor="$repo/target/release/tresor"
work="$repo/.tmp/demo"
rm -rf "$work"
mkdir -p "$work"

echo "+ tresor push testdata/manifests/app oci-layout:$work/layout:v1"
ref="$("$tresor" push testdata/manifests/app "oci-layout:$work/layout:v1" \
  --source https://example.com/acme/app --revision "main@sha1:$(printf '0%.0s' {1..40})")"
echo "$ref"

echo "+ tresor inspect oci-layout:$work/layout:v1"
"$tresor" inspect "oci-layout:$work/layout:v1"

echo "+ tresor pull $ref --output $work/pulled --allow-unsigned"
"$tresor" pull "$ref" --output "$work/pulled" --allow-unsigned

echo "+ tresor diff testdata/manifests/app $ref"
"$tresor" diff testdata/manifests/app "$ref"
diff -r testdata/manifests/app "$work/pulled" && echo "pulled tree is identical to testdata/manifests/app"
