#!/usr/bin/env bash
# Webhook benchmark: throughput and latency against an echo server, server-side injection time of a 64 KiB pod,
# and the resident memory of the idle webhook binary serving four MeshInstalls. Prints numbers; asserts nothing.
#   hack/bench-webhook.sh [--seconds N] [--connections N] [--rate N]
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --release -p mizzen-webhook
target/release/mizzen-webhook-bench "$@"

# Idle RSS: the real binary, out of cluster, with caches for four MeshInstalls (four revisions).
work=$(mktemp -d)
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
target/release/mizzen-webhook-bench --write-certs "$work"
files=()
for rev in "" canary blue green; do
  name=${rev:-default}
  sed -e "s/^  name: default$/  name: $name/" -e "s/^  version: \"1.28.0\"$/  version: \"1.28.0\"\n  revision: \"$rev\"/" \
    config/samples/meshinstall.yaml >"$work/$name.yaml"
  files+=(--meshinstall "$work/$name.yaml")
done
port=$((20000 + RANDOM % 20000)); admin=$((port + 1))
RUST_LOG=warn target/release/mizzen-webhook --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key" "${files[@]}" &
pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
for f in create-enabled-namespace host-network pod-64k; do
  for path in /inject /inject/canary /inject/blue; do
    curl -sf --cacert "$work/ca.crt" -H 'content-type: application/json' \
      --data-binary "@webhook/tests/fixtures/$f.json" "https://127.0.0.1:$port$path" >/dev/null
  done
done
sleep 1
echo "idle webhook after 9 reviews, 4 MeshInstalls: $(grep VmRSS /proc/$pid/status | awk '{print $2, $3}') RSS ($(curl -s "http://127.0.0.1:$admin/readyz"))"
