#!/usr/bin/env bash
# Regenerates the files under config/ that come from code: the MeshInstall CRD and the install bundle.
# CI runs this and fails when the committed files differ (`hack/generate.sh --check`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --bin mizzenctl
mizzenctl=target/debug/mizzenctl
crd=config/crd/mizzen.io_meshinstalls.yaml
bundle=config/bundle.yaml

if [[ "${1:-}" == "--check" ]]; then
  status=0
  diff -u "$crd" <("$mizzenctl" crd) || { echo "drift: $crd differs from 'mizzenctl crd'; run hack/generate.sh" >&2; status=1; }
  diff -u "$bundle" <("$mizzenctl" bundle) || { echo "drift: $bundle differs from 'mizzenctl bundle'; run hack/generate.sh" >&2; status=1; }
  [[ $status == 0 ]] && echo "generated files are up to date"
  exit $status
fi

mkdir -p config/crd
"$mizzenctl" crd >"$crd"
"$mizzenctl" bundle >"$bundle"
echo "wrote $crd and $bundle"
