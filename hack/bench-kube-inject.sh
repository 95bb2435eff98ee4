#!/usr/bin/env bash
# Wall time of the release `mizzenctl kube-inject` (process start to exit, as a user sees it) on a generated 90 KiB
# Deployment (four containers, ~270 env vars each), with config/samples/meshinstall.yaml. Prints numbers; asserts
# nothing.
#   hack/bench-kube-inject.sh [RUNS]   (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [RUNS], RUNS a positive integer" >&2; exit 2; }

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
# Timed from a small Python loop with posix_spawn (no shell, no `date` forks in the measurement), output to
# /dev/null; /bin/true in the same loop shows what any process start costs here.
spawn_times() {
  python3 - "$runs" "$@" <<'PY'
import os, sys, time
runs, argv = int(sys.argv[1]), sys.argv[2:]
devnull = os.open(os.devnull, os.O_WRONLY)
times = []
for _ in range(runs):
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status = os.waitpid(pid, 0)
    times.append(time.perf_counter_ns() - start)
    if status != 0:
        sys.exit(f"{argv[0]} failed (wait status {status})")
times.sort()
print(f"min {times[0] / 1e6:.2f} ms, p50 {times[runs // 2] / 1e6:.2f} ms, max {times[-1] / 1e6:.2f} ms")
PY
}
# Separate assignments, so that a failed run stops the script (set -e does not see a failure inside an echo).
inject_times=$(spawn_times "${mizzenctl[@]}")
true_times=$(spawn_times /bin/true)
echo "mizzenctl kube-inject of a $bytes-byte Deployment, $runs runs: $inject_times"
echo "/bin/true, $runs runs (process start alone): $true_times"
