#!/usr/bin/env bash
# Regenerates the files under config/ that come from code: the MeshInstall CRD and the install bundle.
# CI runs this and fails when the committed files differ (`hack/generate.sh --check`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --bin mizzenctl
mizzenctl=target/debug/mizzenctl
crd=config/crd/mizzen.io_meshinstalls.yaml
bundle=config/bundle.yaml
grants=config/rbac/operator-grants.yaml
istio_crds=src/istio_crds.gen.json
# Istio's generated CRD file, the fact source of the Istio CRDs mizzen installs (outside the repository).
istio_reference="${MIZZEN_REFERENCE_DIR:-../shared/reference}/istio-crd-all.gen.yaml"

if [[ "${1:-}" == "--check" ]]; then
  status=0
  diff -u "$crd" <("$mizzenctl" crd) || { echo "drift: $crd differs from 'mizzenctl crd'; run hack/generate.sh" >&2; status=1; }
  diff -u "$grants" <("$mizzenctl" rbac) || { echo "drift: $grants differs from 'mizzenctl rbac'; run hack/generate.sh" >&2; status=1; }
  diff -u "$bundle" <("$mizzenctl" bundle) || { echo "drift: $bundle differs from 'mizzenctl bundle'; run hack/generate.sh" >&2; status=1; }
  if [[ -f "$istio_reference" ]]; then
    cmp -s "$istio_crds" <("$mizzenctl" istio-crds --reference "$istio_reference") \
      || { echo "drift: $istio_crds differs from 'mizzenctl istio-crds --reference $istio_reference'; run hack/generate.sh" >&2; status=1; }
  else
    echo "note: $istio_reference not found; $istio_crds not checked" >&2
  fi
  [[ $status == 0 ]] && echo "generated files are up to date"
  exit $status
fi

mkdir -p config/crd
"$mizzenctl" crd >"$crd"
"$mizzenctl" rbac >"$grants"
"$mizzenctl" bundle >"$bundle"
echo "wrote $crd, $grants and $bundle"
if [[ -f "$istio_reference" ]]; then
  "$mizzenctl" istio-crds --reference "$istio_reference" >"$istio_crds.tmp" && mv "$istio_crds.tmp" "$istio_crds"
  echo "wrote $istio_crds from $istio_reference"
else
  echo "note: $istio_reference not found; $istio_crds left as it is" >&2
fi
