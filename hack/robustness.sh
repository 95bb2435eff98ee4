#!/usr/bin/env bash
# Robustness of the webhook binary (release build, 127.0.0.1 only): 16 concurrent 3 MiB reviews (peak RSS), the
# hostile-input corpus (wrong-shaped annotations, labels, probes, volumes; other kinds; broken bodies; the
# admission_review fuzz corpus when present), slow and idle clients, and SIGTERM under ~500 req/s. Prints the
# details, then one line of counts: tried, refused with a message, 4xx, 5xx, panics, hung, failed during shutdown.
#   hack/robustness.sh [--rate N] [--warmup SECONDS]   (extra flags go to mizzen-webhook-robustness)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --release --locked -p mizzen-webhook
# The webhook runs with the allocator settings of its image (webhook/Dockerfile).
source hack/webhook-tunables.sh
export_webhook_tunables
work=$(mktemp -d)
pid=""
cleanup() { if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi; rm -rf "$work"; }
trap cleanup EXIT
target/release/mizzen-webhook-bench --write-certs "$work" >/dev/null
port=$((20000 + RANDOM % 20000)); admin=$((port + 1))
# Short timeouts so the slow-client cases finish quickly; the shutdown delay and drain are the defaults.
RUST_LOG=warn target/release/mizzen-webhook --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  --tls-cert-file "$work/tls.crt" --tls-key-file "$work/tls.key" --meshinstall config/samples/meshinstall.yaml \
  --header-read-timeout-ms 2000 --idle-timeout-ms 3000 --body-read-timeout-ms 2000 >"$work/webhook.log" 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
corpus=()
[[ -d tests/fuzz/corpus/admission_review ]] && corpus=(--corpus tests/fuzz/corpus/admission_review)
target/release/mizzen-webhook-robustness --addr "127.0.0.1:$port" --admin "127.0.0.1:$admin" --ca "$work/ca.crt" \
  --pid "$pid" --log "$work/webhook.log" "${corpus[@]}" "$@"
wait "$pid" 2>/dev/null || true
