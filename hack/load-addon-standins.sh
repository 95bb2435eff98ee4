#!/usr/bin/env bash
# Loads STAND-IN images for the addons into the kit's containerd (the real node has no registry), under the exact
# references mizzen renders for config/samples/meshinstall-addons.yaml: busybox-static plus
# hack/addon-standins/standin, which checks the addon's rendered configuration, mounts, writable paths and (for
# Prometheus) RBAC, then answers the health endpoints. They prove scheduling, the restricted security contexts,
# mounts, probes, Services and readiness in the MeshInstall's status; not Prometheus, Grafana or Jaeger themselves.
#
#   KUBE_KIT=../shared/kube hack/load-addon-standins.sh [--tar-dir DIR]   (--tar-dir: write OCI archives only)
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${KUBE_KIT:-../shared/kube}
tar_dir=""
[[ "${1:-}" == --tar-dir ]] && tar_dir=$2
[[ -x "$kit/load-image" ]] || { echo "no kit at $kit (KUBE_KIT)" >&2; exit 1; }

bb=""
for b in /bin/busybox /usr/bin/busybox; do [[ -x $b ]] && { bb=$b; break; }; done
[[ -n $bb ]] || { echo "busybox not found (apt-get install busybox-static)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/addon-standins.XXXXXX")
trap 'rm -rf "$work"' EXIT
base=$work/base
mkdir -p "$base"/{bin,etc,tmp,proc,sys,dev}
chmod 1777 "$base/tmp"
cp "$bb" "$base/bin/busybox"
for a in $("$bb" --list); do [[ $a == busybox ]] || ln -s busybox "$base/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\ngrafana:x:472:472:grafana:/:/bin/false\njaeger:x:10001:10001:jaeger:/:/bin/false\n' >"$base/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\ngrafana:x:472:\njaeger:x:10001:\n' >"$base/etc/group"

# The images mizzen renders for the sample, by addon.
cargo run -q --bin mizzenctl -- render -f config/samples/meshinstall-addons.yaml >"$work/render.yaml"
images=$(python3 - "$work/render.yaml" <<'PY'
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d and d["kind"] == "Deployment" and d["metadata"]["name"] in ("prometheus", "grafana", "jaeger"):
        print(d["metadata"]["name"], d["spec"]["template"]["spec"]["containers"][0]["image"])
PY
)
while read -r addon image; do
  # The upstream image's entrypoint and user (mizzen sets only the arguments).
  case $addon in
    prometheus) entrypoint=/bin/prometheus user=65534:65534 ;;
    grafana) entrypoint=/run.sh user=472:472 ;;
    jaeger) entrypoint=/cmd/jaeger/jaeger-linux user=10001:10001 ;;
  esac
  out=()
  [[ -n $tar_dir ]] && { mkdir -p "$tar_dir"; out=(--tar "$tar_dir/$addon.tar"); }
  "$kit/load-image" "$image" "${out[@]}" --entrypoint "$entrypoint" --env "STANDIN_ADDON=$addon" --user "$user" \
    "$base:/" "hack/addon-standins/standin:$entrypoint"
  echo "loaded stand-in $image ($addon)"
done <<<"$images"
