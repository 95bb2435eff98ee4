#!/usr/bin/env bash
# Instructions per review, counted by callgrind: the handler (parse, inject, answer) on each fixture body, the whole
# round trip (client, TLS, HTTP and handler) of the webhook and of the echo server on the compact body, and where
# the compact review's handler instructions go. Unlike the throughput of hack/bench-webhook.sh, these counts do not
# vary with the machine's load, so changes are judged by them. Prints numbers; asserts nothing.
#   hack/bench-instructions.sh [--no-round-trip] [N]
# Each count is (run of N reviews − run of 0) / N, N = 1000 unless given. Needs valgrind (apt-get install valgrind).
# About three minutes after the build with the round trips, under one without.
set -euo pipefail
cd "$(dirname "$0")/.."

round_trip=1
n=1000
for arg in "$@"; do
  case "$arg" in
    --no-round-trip) round_trip=0 ;;
    '' | *[!0-9]*) echo "usage: hack/bench-instructions.sh [--no-round-trip] [N]" >&2; exit 2 ;;
    *) n=$arg ;;
  esac
done
if ((n < 1)); then
  echo "N must be at least 1" >&2
  exit 2
fi
for tool in valgrind callgrind_annotate python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "hack/bench-instructions.sh needs $tool (apt-get install valgrind python3)" >&2
    exit 1
  fi
done

cargo build -q --release -p mizzen-webhook --bin mizzen-webhook-bench
source hack/webhook-tunables.sh
export_webhook_tunables
bench=target/release/mizzen-webhook-bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Total instructions of one run of the bench with these arguments; the callgrind output stays in $work/$1.
count() {
  local out=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$work/$out" "$bench" "$@" >/dev/null 2>"$work/$out.log" || {
    cat "$work/$out.log" >&2
    exit 1
  }
  grep -oP 'Collected : \K[0-9]+' "$work/$out.log"
}

# Millions of instructions per review between a run of N and one of 0.
per_review() { python3 -c "print(f'{($2 - $1) / $n / 1e6:.4f} M')"; }

fixtures=webhook/tests/fixtures
echo "handler (parse + inject + answer), instructions per review, N = $n:"
for body in create-enabled-namespace create-enabled-namespace.compact create-enabled-namespace.apiserver; do
  base=$(count "$body.0" --inject-only 0 --body "$fixtures/$body.json")
  full=$(count "$body.$n" --inject-only "$n" --body "$fixtures/$body.json")
  printf '  %-40s %6s bytes  %s\n' "$body.json" "$(wc -c <"$fixtures/$body.json")" "$(per_review "$base" "$full")"
done

if ((round_trip)); then
  echo "round trip (client + TLS + HTTP + handler), compact body, instructions per review:"
  body=$fixtures/create-enabled-namespace.compact.json
  declare -A trip
  for server in webhook echo; do
    base=$(count "rt-$server.0" --requests 0 --server "$server" --body "$body")
    full=$(count "rt-$server.$n" --requests "$n" --server "$server" --body "$body")
    trip[$server]=$((full - base))
    printf '  %-8s %s\n' "$server" "$(per_review 0 "${trip[$server]}")"
  done
  python3 -c "print(f'  echo / webhook: {${trip[echo]} / ${trip[webhook]}:.3f} (the throughput ratio the two can reach when CPU is all that limits them)')"
fi

# The compact review's handler by stage: inclusive counts of the stages' functions in the run of N, over N (each
# runs only for reviews), and the allocator's own instructions (run of N − run of 0).
echo "where the compact review's handler goes, instructions per review:"
python3 - "$work" "$n" <<'EOF'
import re
import subprocess
import sys

work, n = sys.argv[1], int(sys.argv[2])
name = "create-enabled-namespace.compact"


def costs(out, inclusive):
    text = subprocess.run(
        ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", f"{work}/{out}"],
        check=True, capture_output=True, text=True,
    ).stdout
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)  (.*?) \[", line)
        if m:
            found[m.group(2)] = found.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return found


def function(found, suffix):
    # The function's own entry (not a recursion level such as 'name'2).
    return sum(v for k, v in found.items() if k.endswith(":" + suffix))


full = costs(f"{name}.{n}", True)
per = lambda v: v / n / 1000
stages = [
    ("parse the review", "mizzen::admission::parse"),
    ("decide, inject, write the patch", "mizzen::admission::respond"),
    ("  strip an earlier injection, copy the spec", "mizzen::inject::strip::previous_injection"),
    ("  render the pod-dependent fragment", "mizzen::inject::fragment::render"),
    ("  merge it under the pod", "mizzen::inject::merge::fragment_under_pod"),
    ("  post-process the spec (probes, order)", "mizzen::inject::post::spec"),
    ("  rewrite the probes (a pod taking the lists)", "mizzen::inject::post::pod_probes_through_agent"),
    ("  post-process the metadata", "mizzen::inject::post::metadata"),
    ("", "mizzen::inject::post::metadata_changes"),
    ("  write the JSON patch", "mizzen::inject::patch::build"),
    ("write the answer (base64 of the patch)", "mizzen::admission::to_body"),
]
def collected(out):
    return int(re.search(r"Collected : (\d+)", open(f"{work}/{out}.log").read()).group(1))


handler = collected(f"{name}.{n}") - collected(f"{name}.0")
listed = sum(function(full, f) for label, f in stages if label and not label.startswith("  "))
# A stage of two functions (never one within the other) is its line and the unlabelled one after it.
lines = []
for label, f in stages:
    if label:
        lines.append([label, 0])
    lines[-1][1] += function(full, f)
for label, v in lines:
    print(f"  {label:<46} {per(v):7.1f} k")
print(f"  {'the rest (dropping the request and answer)':<46} {per(handler - listed):7.1f} k")
print(f"  {'handler':<46} {per(handler):7.1f} k")
allocator = ("malloc", "_int_malloc", "malloc_consolidate", "free", "_int_free", "realloc", "_int_realloc",
             "calloc", "cfree")
own_full, own_base = costs(f"{name}.{n}", False), costs(f"{name}.0", False)
spent = sum(function(own_full, f) - function(own_base, f) for f in allocator)
print(f"  {'of which malloc and free (their own)':<46} {per(spent):7.1f} k ({spent / handler:.0%})")
EOF
