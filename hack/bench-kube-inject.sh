#!/usr/bin/env bash
# Wall time of the release `mizzenctl kube-inject` (process start to exit, as a user sees it) on a generated 90 KiB
# Deployment (four containers, ~270 env vars each), with config/samples/meshinstall.yaml. Prints numbers; asserts
# nothing.
#   hack/bench-kube-inject.sh [RUNS]   (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}

cargo build -q --release -p mizzen --bin mizzenctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/deployment.yaml" <<'PY'
import sys
lines = ["apiVersion: apps/v1", "kind: Deployment", "metadata:", "  name: big", "  namespace: shop", "spec:",
         "  replicas: 2", "  selector:", "    matchLabels: {app: big}", "  template:", "    metadata:",
         "      labels: {app: big, version: v1}", "    spec:", "      containers:"]
for c in range(4):
    lines += [f"      - name: app-{c}", f"        image: registry.example.com/shop/app-{c}:1.4.2",
              "        ports:", f"        - {{containerPort: {8080 + c}, name: http-{c}}}",
              "        readinessProbe:", f"          httpGet: {{path: /ready, port: {8080 + c}}}", "        env:"]
    for i in range(263):
        lines.append(f"        - {{name: SETTING_{c}_{i:03}, value: \"value of setting {i} for container {c}, padded\"}}")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
bytes=$(wc -c <"$work/deployment.yaml")
mizzenctl=(target/release/mizzenctl kube-inject --meshinstall config/samples/meshinstall.yaml -f "$work/deployment.yaml")
"${mizzenctl[@]}" >"$work/out.yaml" # warm the page cache; also checks that it injects
grep -q 'name: istio-proxy' "$work/out.yaml"
times=()
for _ in $(seq "$runs"); do
  start=$(date +%s%N)
  "${mizzenctl[@]}" >/dev/null
  times+=($(($(date +%s%N) - start)))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
pick() { sed -n "$1p" <<<"$sorted" | awk '{printf "%.2f ms", $1 / 1e6}'; }
echo "mizzenctl kube-inject of a $bytes-byte Deployment, $runs runs: min $(pick 1), p50 $(pick $((runs / 2 + 1))), max $(pick "$runs")"
