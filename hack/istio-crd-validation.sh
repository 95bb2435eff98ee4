#!/usr/bin/env bash
# Against a real API server (KUBECONFIG): installs the Istio CRDs mizzen renders and checks that a VirtualService
# with wrongly typed fields is refused at apply time and a correct one accepted. Says "skipped" without KUBECONFIG.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${KUBECONFIG:-}" ]]; then
  echo "skipped: no cluster (set KUBECONFIG)"
  exit 0
fi
cargo build -q --bin mizzenctl
tmp=$(mktemp -d)
trap 'kubectl delete namespace mizzen-crd-check --ignore-not-found --wait=false >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
printf 'apiVersion: mizzen.io/v1alpha1\nkind: MeshInstall\nmetadata: {name: default}\nspec: {}\n' >"$tmp/mi.yaml"
target/debug/mizzenctl render -f "$tmp/mi.yaml" >"$tmp/all.yaml"
# Only the CRDs: split the stream and keep CustomResourceDefinition documents.
awk 'BEGIN{RS="---\n"; ORS=""} /kind: CustomResourceDefinition/ {print "---\n" $0}' "$tmp/all.yaml" >"$tmp/crds.yaml"
kubectl apply --server-side --force-conflicts --field-manager=mizzen-operator -f "$tmp/crds.yaml" >/dev/null
kubectl wait --for=condition=Established crd/virtualservices.networking.istio.io --timeout=60s >/dev/null
kubectl create namespace mizzen-crd-check --dry-run=client -o yaml | kubectl apply -f - >/dev/null
cat >"$tmp/bad.yaml" <<'YAML'
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: mizzen-crd-check}
spec:
  hosts: reviews
  http:
  - route:
    - destination: {host: reviews}
      weight: ninety
YAML
if out=$(kubectl apply -f "$tmp/bad.yaml" 2>&1); then
  echo "FAIL: a VirtualService with hosts: string and weight: ninety was accepted" >&2
  exit 1
fi
grep -q 'spec.hosts' <<<"$out" && grep -q 'weight' <<<"$out" || { echo "FAIL: unexpected refusal: $out" >&2; exit 1; }
sed -e 's/hosts: reviews/hosts: [reviews]/' -e 's/weight: ninety/weight: 100/' "$tmp/bad.yaml" | kubectl apply -f - >/dev/null
echo "ok: the API server refuses a mistyped VirtualService and accepts a correct one"
