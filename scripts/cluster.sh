#!/usr/bin/env bash
# A real Kubernetes control plane for tresor's cluster tests, on 127.0.0.1: etcd,
# kube-apiserver (RBAC, the default admission plugins) and kube-controller-manager (the
# namespace, garbage-collector, service-account and token controllers), built from
# testenv/ (k8s.io/kubernetes and etcd at the versions its go.mod pins). No kubelet and no
# scheduler: Pods never run, so a Deployment never becomes available on its own.
#
# Usage: scripts/cluster.sh start|stop|status|env|build|path NAME
#   start   build on first use, make the PKI once, start what is not running, wait for
#           /readyz, write the admin kubeconfig (idempotent)
#   stop    stop the processes this state dir started (found through their pid files)
#   status  show each process; exit 1 unless all are up and /readyz answers ok
#   env     print `export KUBECONFIG=…` (and TRESOR_CLUSTER_*) and the server version
#   build   only build (or find cached) binaries
#   path    print the absolute path of a built binary (kube-apiserver, kubectl, etcd, …)
#
# Binaries are cached outside the repository in
# ${TRESOR_TESTENV_CACHE:-~/.cache/tresor/testenv}/<sha256 of testenv/go.sum>/bin, so a
# second run (and a second checkout) builds nothing. State (PKI, etcd data, logs, pid
# files, kubeconfigs) lives in ${TRESOR_CLUSTER_DIR:-<repo>/.tmp/cluster}.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${TRESOR_CLUSTER_DIR:-$repo/.tmp/cluster}"
host=127.0.0.1
api_port="${TRESOR_CLUSTER_API_PORT:-16443}"
etcd_port="${TRESOR_CLUSTER_ETCD_PORT:-12379}"
etcd_peer_port="${TRESOR_CLUSTER_ETCD_PEER_PORT:-12380}"
wait_secs="${TRESOR_CLUSTER_WAIT_SECS:-90}"
testenv="$repo/testenv"
components=(etcd kube-apiserver kube-controller-manager)

die() { echo "cluster.sh: $*" >&2; exit 1; }

# The version testenv/go.mod pins, stamped into the binaries as `make` would (otherwise
# the server reports v0.0.0-master).
k8s_version() {
  sed -n 's#^\(require \)\{0,1\}[[:space:]]*k8s.io/kubernetes \(v[0-9.]*\)$#\2#p' "$testenv/go.mod" | head -n 1
}

ldflags() {
  local v minor
  v="$(k8s_version)"
  minor="${v#v1.}"
  minor="${minor%%.*}"
  local x="-X k8s.io/component-base/version"
  echo "-s $x.gitVersion=$v $x.gitMajor=1 $x.gitMinor=$minor $x.gitTreeState=clean" \
    "-X k8s.io/client-go/pkg/version.gitVersion=$v"
}

bin_dir() {
  local sum
  sum="$( (cat "$testenv/go.sum" "$testenv/go.mod" "$testenv/cmd/etcd/main.go"; ldflags) | sha256sum | cut -c1-16)"
  echo "${TRESOR_TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tresor/testenv}/$sum/bin"
}

# Builds the four binaries unless the cache for this go.sum has them all.
cmd_build() {
  local bin tmp start
  bin="$(bin_dir)"
  if [[ -x "$bin/kube-apiserver" && -x "$bin/kube-controller-manager" && -x "$bin/kubectl" && -x "$bin/etcd" ]]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found: the control plane is built from testenv/ with Go ≥ 1.26"
  echo "cluster.sh: building kube-apiserver, kube-controller-manager, kubectl and etcd from testenv/ into $bin" >&2
  echo "cluster.sh: the first build takes about 10 minutes on 2 cores; later runs reuse it" >&2
  start=$SECONDS
  tmp="$bin.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  (cd "$testenv" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "$(ldflags)" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl \
    ./cmd/etcd)
  rm -rf "$bin"
  mv "$tmp" "$bin"
  echo "cluster.sh: built in $((SECONDS - start))s" >&2
}

cmd_path() {
  local name="${1:-}" bin
  [[ -n "$name" ]] || die "usage: $0 path NAME"
  cmd_build
  bin="$(bin_dir)/$name"
  [[ -x "$bin" ]] || die "no binary $name in $(bin_dir)"
  echo "$bin"
}

# Pid of a running component, or nothing; checks the command line, so a recycled pid is
# never mistaken for (or killed as) ours.
running_pid() {
  local pidfile="$state/$1.pid" pid
  [[ -s "$pidfile" ]] || return 0
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1"; then
    echo "$pid"
  fi
}

# CA, API server serving certificate, service-account signing key, client certificates
# for the admin (system:masters) and the controller manager; made once.
make_pki() {
  local pki="$state/pki"
  [[ -s "$pki/admin.crt" ]] && return 0
  command -v openssl >/dev/null 2>&1 || die "openssl not found (Debian: apt-get install -y openssl)"
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=tresor test cluster CA" -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  sign() { # name subject extensions
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "$2" -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$pki/$1.ext"
    openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$pki/$1.ext" -out "$pki/$1.crt" 2>/dev/null
  }
  sign apiserver "/CN=kube-apiserver" "basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  local client="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
  sign controller-manager "/CN=system:kube-controller-manager" "$client"
  sign admin "/O=system:masters/CN=tresor-admin" "$client"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

# kubeconfig NAME USER: a kubeconfig with USER's client certificate.
write_kubeconfig() {
  local pki="$state/pki"
  cat >"$state/$1.kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tresor-test
  cluster:
    server: https://$host:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: tresor-test
  context: {cluster: tresor-test, user: $2, namespace: default}
current-context: tresor-test
EOF
  mv "$state/$1.kubeconfig.tmp" "$state/$1.kubeconfig"
}

launch() { # name args...
  local name="$1"
  shift
  if [[ -n "$(running_pid "$name")" ]]; then
    echo "$name already running (pid $(running_pid "$name"))"
    return 0
  fi
  nohup "$@" >>"$state/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
  echo "$name starting (pid $!)"
}

# wait_for NAME COMMAND...: until COMMAND succeeds, failing with the log when NAME exits.
# Only the pid is checked here, not its command line: right after the start, the child may
# not have exec'd the server yet (its command line is still this script's).
wait_for() {
  local name="$1" deadline=$((SECONDS + wait_secs)) pid
  pid="$(<"$state/$name.pid")"
  shift
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: $name exited; last log lines:" >&2; tail -n 30 "$state/$name.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "cluster.sh: $name not ready within ${wait_secs}s; last log lines:" >&2; tail -n 30 "$state/$name.log" >&2; exit 1; }
    sleep 0.3
  done
}

readyz() {
  curl -sf --max-time 3 --cacert "$state/pki/ca.crt" --cert "$state/pki/admin.crt" \
    --key "$state/pki/admin.key" "https://$host:$api_port/readyz" | grep -qx ok
}

cmd_start() {
  local bin pki="$state/pki" start=$SECONDS
  command -v curl >/dev/null 2>&1 || die "curl not found (Debian: apt-get install -y curl)"
  cmd_build
  bin="$(bin_dir)"
  mkdir -p "$state"
  make_pki
  write_kubeconfig admin admin
  write_kubeconfig controller-manager controller-manager

  launch etcd "$bin/etcd" --name tresor-test --data-dir "$state/etcd" \
    --listen-client-urls "http://$host:$etcd_port" --advertise-client-urls "http://$host:$etcd_port" \
    --listen-peer-urls "http://$host:$etcd_peer_port" --initial-advertise-peer-urls "http://$host:$etcd_peer_port" \
    --initial-cluster "tresor-test=http://$host:$etcd_peer_port" \
    --unsafe-no-fsync --quota-backend-bytes 4294967296 --log-level warn
  wait_for etcd curl -sf --max-time 2 "http://$host:$etcd_port/health"

  launch kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://$host:$etcd_port" \
    --bind-address "$host" --advertise-address "$host" --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/12 \
    --authorization-mode RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --endpoint-reconciler-type none \
    --profiling=false --v 1
  wait_for kube-apiserver readyz

  launch kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$state/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
    --bind-address "$host" --secure-port 0 --leader-elect=false \
    --controllers namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,clusterrole-aggregation-controller,root-ca-certificate-publisher-controller \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --v 1
  # Ready when the service-account controller has given `default` its ServiceAccount.
  wait_for kube-controller-manager "$bin/kubectl" --kubeconfig "$state/admin.kubeconfig" \
    get serviceaccount default -n default
  echo "cluster ready in $((SECONDS - start))s (state: $state; KUBECONFIG=$state/admin.kubeconfig)"
}

cmd_stop() {
  local i name pid
  # In reverse: the API server before its store.
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    name="${components[$i]}"
    pid="$(running_pid "$name")"
    [[ -n "$pid" ]] || { rm -f "$state/$name.pid"; continue; }
    kill "$pid" 2>/dev/null || true
    for ((n = 0; n < 100; n++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/$name.pid"
    echo "$name stopped (pid $pid)"
  done
}

cmd_status() {
  local name pid ok=0
  for name in "${components[@]}"; do
    pid="$(running_pid "$name")"
    if [[ -n "$pid" ]]; then echo "$name: running pid $pid"; else echo "$name: stopped"; ok=1; fi
  done
  if readyz; then echo "https://$host:$api_port/readyz: ok"; else echo "https://$host:$api_port/readyz: not ready"; ok=1; fi
  return "$ok"
}

cmd_env() {
  local version
  version="$("$(bin_dir)/kubectl" --kubeconfig "$state/admin.kubeconfig" version -o json 2>/dev/null \
    | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | tail -n 1 || true)"
  cat <<EOF
export KUBECONFIG=$state/admin.kubeconfig
export TRESOR_CLUSTER_KUBECONFIG=$state/admin.kubeconfig
export TRESOR_CLUSTER_KUBECTL=$(bin_dir)/kubectl
# server version: ${version:-unknown (not running?)}
EOF
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  build) cmd_build ;;
  path) cmd_path "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|env|build|path NAME" >&2; exit 2 ;;
esac
