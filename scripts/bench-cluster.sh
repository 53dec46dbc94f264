#!/usr/bin/env bash
# Benchmarks against the real API server of scripts/cluster.sh (started if needed), with
# release builds. Run them on a quiet machine: the server counts every client's requests.
#
# Usage: scripts/bench-cluster.sh apply|puller|scale|all
#   apply   `tresor apply` of 1,000 objects (ConfigMaps, Services, Deployments, a CRD and
#           100 of its custom resources) from an OCI layout: objects/s, CPU of tresor and of
#           kube-apiserver; then the same artifact again (nothing changes)
#   puller  100 ArtifactSyncs: time to Ready, idle RSS, server-counted API requests and
#           registry requests per idle cycle, push → applied at interval 10s
#           (benches/puller_cluster.rs; SYNCS, OBJECTS, INTERVAL, IDLE_CYCLES override)
#   scale   the same with 1,000 ArtifactSyncs of 10 objects each
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

scripts/registry.sh start >/dev/null
eval "$(scripts/registry.sh env)"
scripts/cluster.sh start >/dev/null
eval "$(scripts/cluster.sh env)"
kubectl="$TRESOR_CLUSTER_KUBECTL"
# The CRDs and RBAC of deploy/ (the puller itself runs as a local process).
"$kubectl" apply --server-side --force-conflicts -k deploy/ >/dev/null
"$kubectl" wait --for condition=Established --timeout 60s crd/artifactsyncs.tresor.dev >/dev/null
echo "bench-cluster: $(date -u +%Y-%m-%d), server $("$kubectl" version -o json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | tail -n 1), $(nproc) cores"

ticks() { # utime+stime of a pid, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}

bench_apply() {
  cargo build --release --quiet --bin tresor
  local tresor=target/release/tresor work ns=bench-apply-$$ objects=1000
  work="$(mktemp -d)"
  python3 - "$work/tree" "$ns" <<'PY'
import os, sys
out, ns = sys.argv[1], sys.argv[2]
os.makedirs(out)
group = f"{ns}.example.com"
docs = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n",
        f"""apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"""]
docs += [f"apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w-{n}\nspec:\n  size: {n}\n" for n in range(100)]
n = 0
while len(docs) < 1000:
    n += 1
    docs.append([
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-{n}\ndata:\n  LOG_LEVEL: info\n  config.yaml: |\n    listen: :8080\n    upstream: http://svc-{n}\n",
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{n}\nspec:\n  selector:\n    app: app-{n}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n",
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app-{n}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: app-{n}\n  template:\n    metadata:\n      labels:\n        app: app-{n}\n    spec:\n      containers:\n      - name: app\n        image: ghcr.io/acme/app@sha256:{n:064x}\n        ports:\n        - containerPort: 8080\n        resources:\n          requests:\n            cpu: 100m\n",
    ][n % 3])
for i in range(0, len(docs), 50):
    with open(os.path.join(out, f"part-{i // 50:03}.yaml"), "w") as f:
        f.write("---\n".join(docs[i:i + 50]))
PY
  "$tresor" push "$work/tree" "oci-layout:$work/layout:v1" --reproducible >/dev/null 2>&1
  local api_pid t0 a0 start end
  api_pid="$(cat "${TRESOR_CLUSTER_DIR:-.tmp/cluster}/kube-apiserver.pid")"
  for round in create unchanged; do
    a0="$(ticks "$api_pid")"
    start="$(date +%s.%N)"
    /usr/bin/env time -f "%U %S %M" -o "$work/time" "$tresor" apply "oci-layout:$work/layout:v1" \
      --kubeconfig "$TRESOR_CLUSTER_KUBECONFIG" -n "$ns" --name bench --prune --allow-unsigned ${APPLY_FLAGS:-} \
      --cache-dir "$work/cache" >/dev/null
    end="$(date +%s.%N)"
    read -r user sys maxrss <"$work/time"
    python3 - "$round" "$objects" "$start" "$end" "$user" "$sys" "$maxrss" "$a0" "$(ticks "$api_pid")" "$(getconf CLK_TCK)" <<'PY'
import sys
r, n, s, e, u, sy, rss, a0, a1, hz = sys.argv[1:]
wall = float(e) - float(s)
print(f"apply ({r}): {n} objects in {wall:.2f} s = {int(n) / wall:.0f} objects/s; "
      f"tresor CPU {float(u) + float(sy):.2f} s, max RSS {int(rss) // 1024} MiB; "
      f"kube-apiserver CPU {(int(a1) - int(a0)) / int(hz):.2f} s")
PY
  done
  "$kubectl" delete namespace "$ns" --wait=false >/dev/null
  "$kubectl" delete crd "widgets.$ns.example.com" --wait=false >/dev/null
  rm -rf "$work"
}

bench_puller() {
  cargo bench --bench puller_cluster
}

case "${1:-all}" in
  apply) bench_apply ;;
  puller) bench_puller ;;
  scale) SYNCS="${SYNCS:-1000}" OBJECTS="${OBJECTS:-10}" bench_puller ;;
  all) bench_apply; bench_puller; SYNCS=1000 OBJECTS=10 bench_puller ;;
  *) echo "usage: $0 apply|puller|scale|all" >&2; exit 2 ;;
esac
