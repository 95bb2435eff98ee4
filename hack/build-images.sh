#!/usr/bin/env bash
# Builds the bundle's two images from this checkout without a container engine: static (musl) release binaries of
# mizzen-operator and mizzen-webhook, loaded into the kit's containerd under exactly the references
# config/bundle.yaml uses (../shared/kube/load-image: FROM scratch, one layer, non-root 65532). The Dockerfiles in
# operator/ and webhook/ build the same binaries for users who have a container engine.
#
#   hack/build-images.sh              build and load (KUBE_KIT, default ../shared/kube)
#   hack/build-images.sh --tar DIR    build and write OCI archives to DIR instead (no containerd needed)
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${KUBE_KIT:-../shared/kube}
tar_dir=
if [[ "${1:-}" == "--tar" ]]; then tar_dir=${2:?--tar needs a directory}; mkdir -p "$tar_dir"; fi

arch=$(uname -m)
target=$arch-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" >&2
fi
if ! command -v musl-gcc >/dev/null; then
  # ring compiles C for the musl target.
  apt-get install -y -qq musl-tools >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
fi
cargo build --release --locked --target "$target" -p mizzen-operator -p mizzen-webhook --bin mizzen-operator --bin mizzen-webhook >&2

for component in operator webhook; do
  ref=$(sed -n "s|^ *image: \(.*/mizzen-$component:.*\)$|\1|p" config/bundle.yaml | head -1)
  [[ -n "$ref" ]] || { echo "no mizzen-$component image in config/bundle.yaml" >&2; exit 1; }
  bin=target/$target/release/mizzen-$component
  args=("$ref" --entrypoint "/mizzen-$component" --user 65532:65532)
  if [[ -n "$tar_dir" ]]; then
    args+=(--tar "$tar_dir/mizzen-$component.tar")
  elif [[ ! -x "$kit/load-image" ]]; then
    echo "no $kit/load-image (set KUBE_KIT, or use --tar DIR)" >&2; exit 1
  fi
  "$kit/load-image" "${args[@]}" "$bin:/mizzen-$component" >&2
  echo "$ref"
done
