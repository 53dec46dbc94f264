#!/usr/bin/env bash
# Local OCI registries for tresor's tests: three CNCF Distribution 2.8 instances
# (Debian's `docker-registry`) on 127.0.0.1.
#
#   plain  HTTP, no auth              ${TRESOR_REGISTRY_PLAIN_PORT:-5001}
#   auth   HTTP + htpasswd basic auth ${TRESOR_REGISTRY_AUTH_PORT:-5002}
#   tls    HTTPS + htpasswd basic auth ${TRESOR_REGISTRY_TLS_PORT:-5003} (self-signed CA)
#
# Usage: scripts/registry.sh start|stop|status|env
#   start   start missing/dead instances (idempotent), wait until each answers GET /v2/
#   stop    stop all instances started from this state dir
#   status  show each instance; exit 1 unless all are up
#   env     print `export TRESOR_REGISTRY_*=...` lines (eval "$(scripts/registry.sh env)")
#
# State (configs, storage, logs, pid files, CA) lives in
# ${TRESOR_REGISTRY_DIR:-<repo>/.tmp/registry}. Needs docker-registry, htpasswd
# (apache2-utils) and openssl; uses curl when present, otherwise bash /dev/tcp (plain) and
# `openssl s_client` (TLS) to probe.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${TRESOR_REGISTRY_DIR:-$repo/.tmp/registry}"
host=127.0.0.1
plain_port="${TRESOR_REGISTRY_PLAIN_PORT:-5001}"
auth_port="${TRESOR_REGISTRY_AUTH_PORT:-5002}"
tls_port="${TRESOR_REGISTRY_TLS_PORT:-5003}"
user=tresor
password=tresor-pass
wait_secs="${TRESOR_REGISTRY_WAIT_SECS:-20}"
registry_bin="${TRESOR_REGISTRY_BIN:-docker-registry}"
instances=(plain auth tls)

die() { echo "registry.sh: $*" >&2; exit 1; }

port_of() {
  case "$1" in
    plain) echo "$plain_port" ;;
    auth) echo "$auth_port" ;;
    tls) echo "$tls_port" ;;
    *) die "unknown instance $1" ;;
  esac
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found; install it (Debian: apt-get install -y $2)"
}

# Pid of the running instance, or nothing. Checks that the pid still is a registry
# process, so a recycled pid is never mistaken for (or killed as) ours.
running_pid() {
  local pidfile="$state/$1/registry.pid" pid
  [[ -s "$pidfile" ]] || return 0
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "registry.*serve"; then
    echo "$pid"
  fi
}

# HTTP status code of GET /v2/ on an instance ("000" when nothing answers).
probe() {
  local name="$1" port code=""
  port="$(port_of "$name")"
  if command -v curl >/dev/null 2>&1; then
    if [[ "$name" == tls ]]; then
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$state/tls/ca.pem" \
        "https://$host:$port/v2/" 2>/dev/null || true)"
    else
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$host:$port/v2/" 2>/dev/null || true)"
    fi
  else
    local req="GET /v2/ HTTP/1.0\r\nHost: $host:$port\r\n\r\n" line=""
    if [[ "$name" == tls ]]; then
      line="$(printf "$req" | timeout 3 openssl s_client -quiet -connect "$host:$port" \
        -CAfile "$state/tls/ca.pem" -verify_return_error -verify_ip "$host" 2>/dev/null | head -n1 || true)"
    else
      line="$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"; printf "$3" >&3; head -n1 <&3' _ \
        "$host" "$port" "$req" 2>/dev/null || true)"
    fi
    code="$(sed -n 's#^HTTP/[0-9.]* \([0-9][0-9][0-9]\).*#\1#p' <<<"$line")"
  fi
  [[ "$code" =~ ^[0-9]{3}$ ]] || code=000
  echo "$code"
}

# Self-signed CA and a server certificate for 127.0.0.1/localhost, made once.
make_certs() {
  local dir="$state/tls"
  [[ -s "$dir/ca.pem" && -s "$dir/server.pem" && -s "$dir/server-key.pem" ]] && return 0
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=tresor test CA" -keyout "$dir/ca-key.pem" -out "$dir/ca.pem.tmp" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$dir/server-key.pem" -out "$dir/server.csr" 2>/dev/null
  cat >"$dir/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem.tmp" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -days 3650 -sha256 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  chmod 600 "$dir/ca-key.pem" "$dir/server-key.pem"
  # skopeo/containers read a directory of *.crt files (--cert-dir / --src-cert-dir).
  mkdir -p "$dir/certs.d"
  cp "$dir/ca.pem.tmp" "$dir/certs.d/ca.crt"
  mv "$dir/ca.pem.tmp" "$dir/ca.pem"
  ln -sf tls/ca.pem "$state/ca.pem"
}

make_htpasswd() {
  [[ -s "$state/htpasswd" ]] && return 0
  htpasswd -Bbn "$user" "$password" >"$state/htpasswd.tmp"
  mv "$state/htpasswd.tmp" "$state/htpasswd"
}

write_config() {
  local name="$1" port dir
  port="$(port_of "$name")"
  dir="$state/$name"
  mkdir -p "$dir/storage"
  {
    cat <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $host:$port
  secret: tresor-test-only-$name
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [[ "$name" == tls ]]; then
      cat <<EOF
  tls:
    certificate: $state/tls/server.pem
    key: $state/tls/server-key.pem
EOF
    fi
    if [[ "$name" != plain ]]; then
      cat <<EOF
auth:
  htpasswd:
    realm: tresor-test
    path: $state/htpasswd
EOF
    fi
  } >"$dir/config.yml"
}

start_one() {
  local name="$1" dir="$state/$1" pid code
  pid="$(running_pid "$name")"
  if [[ -n "$pid" ]]; then
    echo "registry $name already running (pid $pid)"
    return 0
  fi
  code="$(probe "$name")"
  if [[ "$code" != 000 ]]; then
    die "port $(port_of "$name") ($name) is taken by another process (GET /v2/ -> $code); stop it or set TRESOR_REGISTRY_$(tr '[:lower:]' '[:upper:]' <<<"$name")_PORT"
  fi
  write_config "$name"
  # The pid file is the only handle `stop` has; it is written right after the fork.
  nohup "$registry_bin" serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
  echo $! >"$dir/registry.pid"
  echo "registry $name starting on $host:$(port_of "$name") (pid $!)"
}

# wait_one NAME: until the registry answers, failing with the log when it exits. Only the pid
# is checked, not its command line: right after the start, the child may not have exec'd the
# registry yet (its command line is still this script's).
wait_one() {
  local name="$1" dir="$state/$1" deadline code pid
  deadline=$((SECONDS + wait_secs))
  pid="$(<"$dir/registry.pid")"
  while true; do
    code="$(probe "$name")"
    if [[ "$code" == 200 || "$code" == 401 ]]; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "registry.sh: registry $name exited during startup; last log lines:" >&2
      tail -n 20 "$dir/registry.log" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "registry.sh: registry $name did not answer GET /v2/ within ${wait_secs}s (last status $code); last log lines:" >&2
      tail -n 20 "$dir/registry.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

cmd_start() {
  need "$registry_bin" docker-registry
  need htpasswd apache2-utils
  need openssl openssl
  mkdir -p "$state"
  make_certs
  make_htpasswd
  local name
  for name in "${instances[@]}"; do start_one "$name"; done
  for name in "${instances[@]}"; do wait_one "$name"; done
  echo "registries ready (state: $state)"
}

cmd_stop() {
  local name pid i
  for name in "${instances[@]}"; do
    pid="$(running_pid "$name")"
    if [[ -z "$pid" ]]; then
      rm -f "$state/$name/registry.pid"
      continue
    fi
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/$name/registry.pid"
    echo "registry $name stopped (pid $pid)"
  done
}

cmd_status() {
  local name pid ok=0
  for name in "${instances[@]}"; do
    pid="$(running_pid "$name")"
    if [[ -n "$pid" ]]; then
      echo "$name: running pid $pid on $host:$(port_of "$name"), GET /v2/ -> $(probe "$name")"
    else
      echo "$name: stopped"
      ok=1
    fi
  done
  return "$ok"
}

cmd_env() {
  cat <<EOF
export TRESOR_REGISTRY_PLAIN=$host:$plain_port
export TRESOR_REGISTRY_AUTH=$host:$auth_port
export TRESOR_REGISTRY_TLS=$host:$tls_port
export TRESOR_REGISTRY_USER=$user
export TRESOR_REGISTRY_PASSWORD=$password
export TRESOR_REGISTRY_CA=$state/ca.pem
export TRESOR_REGISTRY_CERT_DIR=$state/tls/certs.d
EOF
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
