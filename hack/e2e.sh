#!/usr/bin/env bash
# End-to-end check against a real cluster (tier 5). Needs KUBECONFIG; without it, says so and exits 0.
#
#   hack/e2e.sh                 operator and webhook run here, out of cluster; the API server must reach
#                               https://$WEBHOOK_HOST:8443 (default 127.0.0.1: k3s, minikube --driver=none; use
#                               WEBHOOK_HOST=host.docker.internal or similar for kind)
#   hack/e2e.sh --in-cluster    use config/bundle.yaml (the images must be pullable by the cluster)
#
# It never waits for Pods to run, so clusters without schedulable nodes work.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "skipped: no cluster (KUBECONFIG is not set)"
  exit 0
fi
mode=${1:-out-of-cluster}
ns=mizzen-e2e-$RANDOM
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
wait_for() { # description, command...
  local what=$1; shift
  for _ in $(seq 120); do "$@" >/dev/null 2>&1 && { echo "ok: $what"; return 0; }; sleep 1; done
  fail "$what"
}

echo "== install"
if [[ "$mode" == "--in-cluster" ]]; then
  kubectl apply -f config/bundle.yaml
else
  cargo build -q --release -p mizzen-operator -p mizzen-webhook
  kubectl apply -f config/namespace.yaml -f config/crd/mizzen.io_meshinstalls.yaml -f config/rbac/
  host=${WEBHOOK_HOST:-127.0.0.1}
  target/release/mizzen-operator --kubeconfig "$KUBECONFIG" --namespace mizzen-system --admin-listen 127.0.0.1:19090 \
    --webhook-url "https://$host:8443/inject" --webhook-tls-dir "$work/tls" >"$work/operator.log" 2>&1 &
  pids+=($!)
  wait_for "operator wrote the webhook certificate" test -s "$work/tls/tls.crt"
  target/release/mizzen-webhook --kubeconfig "$KUBECONFIG" --listen 0.0.0.0:8443 --admin-listen 127.0.0.1:19091 \
    --tls-cert-file "$work/tls/tls.crt" --tls-key-file "$work/tls/tls.key" >"$work/webhook.log" 2>&1 &
  pids+=($!)
fi
kubectl wait --for=condition=Established crd/meshinstalls.mizzen.io --timeout=60s

echo "== mesh"
kubectl apply -f config/samples/meshinstall.yaml
wait_for "istiod Deployment" kubectl -n istio-system get deployment istiod
wait_for "ingress gateway Service on NodePort 30080" \
  bash -c "kubectl -n istio-system get svc istio-ingressgateway -o jsonpath='{.spec.ports[?(@.name==\"http2\")].nodePort}' | grep -qx 30080"
wait_for "MutatingWebhookConfiguration" kubectl get mutatingwebhookconfiguration mizzen-sidecar-injector
wait_for "Istio CRDs" kubectl get crd virtualservices.networking.istio.io destinationrules.networking.istio.io gateways.networking.istio.io
wait_for "MeshInstall reports Reconciled" \
  bash -c "kubectl get meshinstall default -o jsonpath='{.status.conditions[?(@.type==\"Reconciled\")].status}' | grep -qx True"
kubectl get meshinstall
[[ "$mode" == "--in-cluster" ]] || wait_for "webhook ready" curl -sf http://127.0.0.1:19091/readyz

echo "== injection"
kubectl create namespace "$ns"
kubectl label namespace "$ns" istio-injection=enabled
kubectl -n "$ns" apply -f config/samples/whoami/deployments.yaml -f config/samples/whoami/service.yaml
wait_for "whoami pods carry istio-proxy" bash -c \
  "kubectl -n $ns get pods -l app=whoami -o jsonpath='{.items[*].spec.initContainers[*].name} {.items[*].spec.containers[*].name}' | grep -q istio-proxy"
kubectl -n "$ns" apply -f config/samples/whoami/traffic.yaml
kubectl -n "$ns" get gateway,virtualservice,destinationrule

echo "== uninstall"
kubectl delete meshinstall default --wait=true --timeout=120s
wait_for "istiod removed" bash -c "! kubectl -n istio-system get deployment istiod"
wait_for "webhook configuration removed" bash -c "! kubectl get mutatingwebhookconfiguration mizzen-sidecar-injector"
kubectl get crd virtualservices.networking.istio.io >/dev/null || fail "Istio CRDs must survive the MeshInstall"
echo "e2e: passed"
