#!/usr/bin/env bash
# The operator's cost on a real API server (../shared/kube `up`, no node, its own state and ports): with N unrelated
# Deployments and ConfigMaps in the cluster (default 500 each), the release operator reconciles the sample
# MeshInstall; then 10 reconciles are triggered and measured. Prints API requests per reconcile (the operator's
# own client counter) and its RSS (now and peak).
#
#   hack/bench-operator.sh [N]        KUBE_KIT (default ../shared/kube); stops its control plane at the end
#   OPERATOR_BIN=target/x86_64-unknown-linux-musl/release/mizzen-operator hack/bench-operator.sh   (the image's binary)
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${KUBE_KIT:-../shared/kube}
n=${1:-500}
[[ -x "$kit/up" ]] || { echo "no Kubernetes kit at $kit (KUBE_KIT)" >&2; exit 1; }
export KUBE_STATE=${TMPDIR:-/tmp}/mizzen-kube-bench
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$kit/down" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
kubeconfig_line=$(KUBE_APISERVER_PORT=36443 KUBE_ETCD_PORT=32379 KUBE_ETCD_PEER_PORT=32380 KUBE_KCM_PORT=30257 "$kit/up" 2>/dev/null) ||
  { echo "$kit/up failed" >&2; exit 1; }
eval "$kubeconfig_line"
[[ "$KUBECONFIG" == "$KUBE_STATE/"* ]] || { echo "up gave an unexpected KUBECONFIG: $KUBECONFIG" >&2; exit 1; }
export KUBECONFIG
cargo build -q --release --locked -p mizzen-operator -p mizzen --bin mizzen-operator --bin mizzenctl

kubectl apply -f config/namespace.yaml >/dev/null
target/release/mizzenctl crd | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established crd/meshinstalls.mizzen.io --timeout=60s >/dev/null
kubectl create namespace bench-unrelated >/dev/null 2>&1 || true
python3 - "$n" >"$work/unrelated.yaml" <<'EOF'
import sys
n = int(sys.argv[1])
for i in range(n):
    print(f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: unrelated-{i}, namespace: bench-unrelated, labels: {{app: unrelated-{i}}}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: unrelated-{i}}}}}
  template:
    metadata: {{labels: {{app: unrelated-{i}}}}}
    spec: {{containers: [{{name: c, image: example.com/c:1, env: [{{name: PAD, value: "{'x' * 512}"}}]}}]}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: unrelated-{i}, namespace: bench-unrelated}}
data: {{payload: "{'y' * 2048}"}}""")
EOF
[[ "$n" -gt 0 ]] && kubectl apply --server-side -f "$work/unrelated.yaml" >/dev/null
echo "cluster: $n unrelated Deployments and $n unrelated ConfigMaps"

# A stand-in for the webhook's port, so the webhook configuration is applied too.
python3 -c 'import socket,time; s=socket.socket(); s.bind(("127.0.0.1",18443)); s.listen(64); time.sleep(86400)' &
pids+=($!)
"${OPERATOR_BIN:-target/release/mizzen-operator}" --kubeconfig "$KUBECONFIG" --namespace mizzen-system --admin-listen 127.0.0.1:19190 \
  --webhook-url https://127.0.0.1:18443/inject --identity bench >"$work/operator.log" 2>&1 &
op=$!
pids+=("$op")
kubectl apply -f config/samples/meshinstall.yaml >/dev/null
kubectl wait meshinstall/default --for=condition=Reconciled --timeout=120s >/dev/null
sleep 3
metric() { curl -s http://127.0.0.1:19190/metrics | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
# Idle traffic (lease renewals every 2 s, watch restarts) over the same time, to subtract.
idle0=$(metric mizzen_operator_api_requests_total)
sleep 12
idle=$(($(metric mizzen_operator_api_requests_total) - idle0))
req0=$(metric mizzen_operator_api_requests_total)
rec0=$(metric mizzen_operator_reconciles_total)
for i in $(seq 10); do
  kubectl annotate meshinstall default bench.mizzen.io/poke="$i" --overwrite >/dev/null
  sleep 1
done
sleep 2
req1=$(metric mizzen_operator_api_requests_total)
rec1=$(metric mizzen_operator_reconciles_total)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$op/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$op/status")
python3 - "$req0" "$req1" "$rec0" "$rec1" "$rss" "$hwm" "$n" "$idle" <<'EOF'
import sys
r0, r1, c0, c1, rss, hwm, n, idle = (float(x) for x in sys.argv[1:])
per = max(r1 - r0 - idle, 0) / max(c1 - c0, 1)
print(f"operator with {int(n)} unrelated Deployments and ConfigMaps: {int(c1 - c0)} reconciles, "
      f"{per:.1f} API requests per reconcile (idle traffic {int(idle)} requests per 12 s subtracted), "
      f"RSS {rss / 1024:.1f} MiB (peak {hwm / 1024:.1f} MiB)")
EOF
