#!/usr/bin/env bash
# Webhook benchmark: throughput and latency against an echo server, server-side injection time of a 64 KiB pod,
# and the resident memory of the webhook binary serving four MeshInstalls, idle and under load. Prints numbers;
# asserts nothing.
#   hack/bench-webhook.sh [--seconds N] [--connections N] [--rate N]
# The memory and load rows run target/release/mizzen-webhook, the binary the image ships (webhook/Dockerfile and
# hack/build-images.sh build it the same way: release, glibc). WEBHOOK_BIN=path measures another build instead, e.g.
# main's for a before/after, or a static musl one (cargo build --release --target x86_64-unknown-linux-musl -p
# mizzen-webhook) for the allocator comparison in the README.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --release -p mizzen-webhook
source hack/webhook-tunables.sh
export_webhook_tunables
target/release/mizzen-webhook-bench "$@"

# Idle RSS: the real binary, out of cluster, with caches for four MeshInstalls (four revisions).
work=$(mktemp -d)
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
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
RUST_LOG=warn "${WEBHOOK_BIN:-target/release/mizzen-webhook}" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
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

# Under load: the same binary driven closed-loop (8 connections, 5 s each) with the small pod, then the 64 KiB one.
rss() { grep "$1" /proc/$pid/status | awk '{print $2, $3}'; }
for f in create-enabled-namespace pod-64k; do
  rate=$(target/release/mizzen-webhook-bench --load "127.0.0.1:$port" --ca "$work/ca.crt" \
    --body "webhook/tests/fixtures/$f.json" --seconds 5 --connections 8)
  echo "webhook under load ($f, 8 connections, $rate): peak RSS so far $(rss VmHWM)"
done
sleep 1
echo "webhook after the load: $(rss VmRSS) RSS"
