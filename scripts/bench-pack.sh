#!/usr/bin/env bash
# Issue 2 benchmark: package a ~100 MB tree of generated YAML with `tresor push` into an OCI
# layout vs `tar -cf - DIR | gzip -6 | sha256sum`, several runs each (median), and the ratio
# (target: tresor <= 0.7x). Then pull + extract the artifact and report MB/s. Also prints
# the CPU time (user + sys) of each, which on a shared machine says more than wall time.
#
# usage: scripts/bench-pack.sh [SIZE_MB=100] [RUNS=5]
# Uses $TRESOR_BIN, else target/release/tresor, built first (honours CARGO_TARGET_DIR).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
size="${1:-100}"
runs="${2:-5}"
work="$repo/.tmp/bench-pack"
tree="$work/tree-${size}mb"

tresor="${TRESOR_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/tresor}"
[[ -n "${TRESOR_BIN:-}" ]] || cargo build --release --quiet --bin tresor
mkdir -p "$work"
[[ -d "$tree" ]] || python3 scripts/gen-tree.py "$tree" "$size"
bytes="$(du -sb "$tree" | cut -f1)"

now() { date +%s.%N; }
# cpu FILE CMD...: runs CMD, appends its user+sys seconds (children included) to FILE.
cpu() { local f="$1"; shift; /usr/bin/time -f '%U %S' -o "$f.one" "$@"; awk '{print $1 + $2}' "$f.one" >> "$f"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Warm the page cache so both sides read from memory.
tar -cf - -C "$tree" . >/dev/null

pipeline=()
push=()
push_off=()
rm -f "$work"/cpu-*
for i in $(seq "$runs"); do
  t0="$(now)"; cpu "$work/cpu-pipeline" bash -c "tar -cf - -C '$tree' . | gzip -6 | sha256sum >/dev/null"; t1="$(now)"
  pipeline+=("$(echo "$t1 - $t0" | bc -l)")
  rm -rf "$work/layout"
  t0="$(now)"; cpu "$work/cpu-push" "$tresor" push "$tree" "oci-layout:$work/layout:v1" --reproducible \
    --source bench --revision bench >/dev/null; t1="$(now)"
  push+=("$(echo "$t1 - $t0" | bc -l)")
  rm -rf "$work/layout-off"
  t0="$(now)"; cpu "$work/cpu-push-off" "$tresor" push "$tree" "oci-layout:$work/layout-off:v1" --reproducible \
    --source bench --revision bench --policy off >/dev/null; t1="$(now)"
  push_off+=("$(echo "$t1 - $t0" | bc -l)")
done
p="$(printf '%s\n' "${pipeline[@]}" | median)"
t="$(printf '%s\n' "${push[@]}" | median)"
toff="$(printf '%s\n' "${push_off[@]}" | median)"

# Each pull extracts into a new directory; they are deleted after the runs. Deleting a
# 2,500-file tree right before creating the next one makes ext4 search long for free inodes
# (recently_deleted), which would measure the file system, not tresor.
pulls=()
pulls_off=()
rm -rf "$work"/out*
for i in $(seq "$runs"); do
  t0="$(now)"; "$tresor" pull "oci-layout:$work/layout:v1" -o "$work/out-$i" --allow-unsigned 2>/dev/null >/dev/null; t1="$(now)"
  pulls+=("$(echo "$t1 - $t0" | bc -l)")
  t0="$(now)"; "$tresor" pull "oci-layout:$work/layout:v1" -o "$work/out-off-$i" --allow-unsigned --policy off 2>/dev/null >/dev/null; t1="$(now)"
  pulls_off+=("$(echo "$t1 - $t0" | bc -l)")
done
rm -rf "$work"/out*
pl="$(printf '%s\n' "${pulls[@]}" | median)"
ploff="$(printf '%s\n' "${pulls_off[@]}" | median)"
layer="$(find "$work/layout/blobs/sha256" -type f -size +1k -printf '%s\n' | sort -n | tail -1)"

printf 'tree: %s (%.1f MB, %s files), layer %.1f MB, %s runs, medians\n' "$tree" "$(echo "$bytes/1000000" | bc -l)" "$(find "$tree" -type f | wc -l)" "$(echo "$layer/1000000" | bc -l)" "$runs"
printf 'tar | gzip -6 | sha256sum : %.3f s\n' "$p"
printf 'tresor push (oci-layout)   : %.3f s  (validation + policy lint + pack, in parallel)\n' "$t"
printf 'ratio tresor / pipeline    : %.2f (target <= 0.70)\n' "$(echo "$t / $p" | bc -l)"
printf 'tresor push --policy off   : %.3f s  (validation + pack), ratio %.2f\n' "$toff" "$(echo "$toff / $p" | bc -l)"
printf 'tresor pull + extract      : %.3f s = %.0f MB/s (unpacked; with the policy lint)\n' "$pl" "$(echo "$bytes / 1000000 / $pl" | bc -l)"
printf 'pull --policy off          : %.3f s = %.0f MB/s (unpacked)\n' "$ploff" "$(echo "$bytes / 1000000 / $ploff" | bc -l)"
printf 'CPU (user+sys), medians    : pipeline %.2f s, push %.2f s, push --policy off %.2f s\n' \
  "$(median < "$work/cpu-pipeline")" "$(median < "$work/cpu-push")" "$(median < "$work/cpu-push-off")"
printf 'load average during the run: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
