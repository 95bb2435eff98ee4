#!/usr/bin/env bash
# Resident memory of the real mizzen-operator binary reconciling one MeshInstall (config/samples/meshinstall.yaml),
# against hack/fake-apiserver.py on 127.0.0.1 (no cluster needed). Prints numbers; asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release -p mizzen-operator
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
python3 hack/fake-apiserver.py "$port" config/samples/meshinstall.yaml &
pids+=($!)
cat >"$work/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "http://127.0.0.1:$port"}}]
users: [{name: fake, user: {token: fake}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
KC
for _ in $(seq 50); do curl -s "http://127.0.0.1:$port/api/v1/namespaces" >/dev/null && break; sleep 0.1; done
RUST_LOG=warn target/release/mizzen-operator --kubeconfig "$work/kubeconfig" --admin-listen "127.0.0.1:$((port + 1))" &
pid=$!
pids+=($pid)
for _ in $(seq 100); do
  state=$(curl -s "http://127.0.0.1:$port/apis/mizzen.io/v1alpha1/meshinstalls/default" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status",{}).get("state",""))')
  [[ -n "$state" ]] && break
  sleep 0.2
done
sleep 3
echo "operator reconciled one MeshInstall (state: ${state:-none}); $(curl -s "http://127.0.0.1:$((port + 1))/metrics" | grep -E '^mizzen_operator_(reconciles|objects_applied)_total' | tr '\n' ' ')"
echo "operator RSS: $(grep VmRSS /proc/$pid/status | awk '{print $2, $3}')"
