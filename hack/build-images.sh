#!/usr/bin/env bash
# Builds the bundle's two images from this checkout without a container engine, loaded into the kit's containerd
# under exactly the references config/bundle.yaml uses (../shared/kube/load-image: FROM scratch, one layer, non-root
# 65532). The Dockerfiles in operator/ and webhook/ build the images users pull:
#   mizzen-operator  a static musl release binary, alone in its image (as on distroless/static);
#   mizzen-webhook   a glibc release binary with the shared libraries it links, copied from this machine. The
#                    Dockerfile's image takes them from Debian 12 (distroless/cc); they are the same only when this
#                    machine runs Debian 12 too (glibc 2.36), as the project's does. Why glibc: it answered 1.8-2.6
#                    times as many small reviews as musl's allocator let a static build, and 3.1-3.5 times as many
#                    64 KiB ones (README, Performance).
#
#   hack/build-images.sh              build and load (KUBE_KIT, default ../shared/kube)
#   hack/build-images.sh --tar DIR    build and write OCI archives to DIR instead (no containerd needed)
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/webhook-tunables.sh
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
cargo build --release --locked --target "$target" -p mizzen-operator --bin mizzen-operator >&2
cargo build --release --locked -p mizzen-webhook --bin mizzen-webhook >&2

# SRC:DEST pairs for what a binary needs besides itself: nothing when it is static (no INTERP program header), else
# its interpreter and every library ldd resolves, each copied from the file its path names (symlinks followed) to
# that path. The C locale keeps the tools' words untranslated; a dynamic binary whose interpreter is not among the
# pairs fails rather than giving an image that cannot start.
shared_libraries() {
  local headers interpreter out pairs lib
  headers=$(LC_ALL=C readelf -lW "$1") || { echo "readelf failed on $1" >&2; return 1; }
  interpreter=$(awk '$1 == "INTERP" {getline; sub(/.*: /, ""); sub(/\]$/, ""); print}' <<<"$headers")
  [[ -n "$interpreter" ]] || return 0
  out=$(LC_ALL=C ldd "$1") || { echo "ldd failed on $1" >&2; return 1; }
  if grep -F 'not found' <<<"$out" >&2; then
    echo "$1 needs a library this machine lacks" >&2
    return 1
  fi
  pairs=$(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out" | sort -u | while read -r lib; do
    echo "$(readlink -f "$lib"):$lib"
  done)
  if ! grep -qxF -- "$(readlink -f "$interpreter"):$interpreter" <<<"$pairs"; then
    echo "ldd did not list $1's interpreter $interpreter" >&2
    return 1
  fi
  echo "$pairs"
}

for component in operator webhook; do
  ref=$(sed -n "s|^ *image: \(.*/mizzen-$component:.*\)$|\1|p" config/bundle.yaml | head -1)
  [[ -n "$ref" ]] || { echo "no mizzen-$component image in config/bundle.yaml" >&2; exit 1; }
  files=()
  if [[ $component == operator ]]; then
    files+=("target/$target/release/mizzen-operator:/mizzen-operator")
  else
    files+=("target/release/mizzen-webhook:/mizzen-webhook")
    libraries=$(shared_libraries target/release/mizzen-webhook)
    if [[ -n "$libraries" ]]; then mapfile -t -O 1 files <<<"$libraries"; fi
  fi
  args=("$ref" --entrypoint "/mizzen-$component" --user 65532:65532)
  if [[ $component == webhook ]]; then
    # The allocator's settings the Dockerfile's image carries (webhook/Dockerfile says why).
    tunables=$(webhook_tunables)
    args+=(--env "GLIBC_TUNABLES=$tunables")
  fi
  if [[ -n "$tar_dir" ]]; then
    args+=(--tar "$tar_dir/mizzen-$component.tar")
  elif [[ ! -x "$kit/load-image" ]]; then
    echo "no $kit/load-image (set KUBE_KIT, or use --tar DIR)" >&2; exit 1
  fi
  "$kit/load-image" "${args[@]}" "${files[@]}" >&2
  echo "$ref"
done
