#!/usr/bin/env bash
# Tier 5: the user's journey end to end on a real single-node Kubernetes (../shared/kube up --node), running the
# README's own commands (the shell blocks marked `<!-- e2e: ... -->`), with this checkout's images.
#
#   KUBE_KIT=../shared/kube hack/e2e.sh     (default KUBE_KIT; without the kit: skipped, or a failure when CI is set)
#
# Prints one summary line with the timings and exits non-zero on any failure. Leaves the cluster running
# (`$KUBE_KIT/down` stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=${KUBE_KIT:-../shared/kube}
if [[ ! -x "$kit/up" ]]; then
  if [[ -n "${CI:-}" ]]; then echo "FAIL: no Kubernetes kit at $kit (KUBE_KIT) and CI is set" >&2; exit 1; fi
  echo "skipped: no Kubernetes kit at $kit (set KUBE_KIT)"
  exit 0
fi

# One user of the node at a time (developers and helpers share this machine's single node). The lock's file
# descriptor is closed for everything started from here (`9>&-`): the kit's daemons must not inherit the lock.
# The node is the machine's (kubelet, containerd, iptables), whatever TMPDIR says: the lock's path is fixed.
exec 9>/tmp/mizzen-node.lock
flock -w 1800 9 || { echo "FAIL: the node is busy (lock /tmp/mizzen-node.lock)" >&2; exit 1; }
bg_pids=()
# Background pod creators and their kubectl children stop with the script.
trap 'for p in "${bg_pids[@]}"; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done' EXIT

failures=0
t0=$(date +%s)
step() { printf '\n== %s\n' "$*"; }
pass() { echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
die() { echo "FAIL: $*" >&2; echo "e2e: FAILED ($* )"; exit 1; }
since() { echo $(($(date +%s) - $1)); }
# wait_until SECONDS DESCRIPTION COMMAND...: polls every second.
wait_until() {
  local limit=$1 what=$2; shift 2
  local start; start=$(date +%s)
  while (($(date +%s) - start < limit)); do
    if "$@" >/dev/null 2>&1; then pass "$what ($(since "$start") s)"; return 0; fi
    sleep 1
  done
  fail "$what (not within ${limit} s)"; return 1
}
# The README's shell block after the marker `<!-- e2e: NAME -->`, one command per line.
readme_block() {
  awk -v marker="<!-- e2e: $1 -->" '
    $0 == marker { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside && NF { print }' README.md
}
run_readme() {
  local block; block=$(readme_block "$1")
  [[ -n "$block" ]] || die "README.md has no '<!-- e2e: $1 -->' shell block"
  while IFS= read -r line; do
    echo "\$ $line"
    bash -c "set -euo pipefail; $line" || die "README command failed: $line"
  done <<<"$block"
}

step "cluster"
# `up` is idempotent, but a state directory left by a hard stop (processes killed, host reset) has once kept a
# component from starting. Recovery, in order: `down` and `up` again with the same state (keeps the unpacked
# binaries and images), then `down --purge` and a fresh start. The kit prints why each attempt failed.
kube_state=${KUBE_STATE:-${TMPDIR:-/tmp}/mizzen-kube}
component_logs() {
  local f
  for f in "$kube_state"/logs/*.log; do
    [[ -f "$f" ]] || continue
    echo "--- last lines of $f"
    tail -n 8 "$f"
  done
}
# The kit's own check reads the Node object's Ready condition, which a Node left by an earlier run still shows for
# a while even when the new kubelet died at start (seen in CI: "validate CRI v1 runtime API ... server is not
# initialized yet"); the kubelet's /healthz is asked as well.
kubelet_healthy() {
  local i
  for i in $(seq 30); do
    curl -fsS --max-time 2 "http://127.0.0.1:${KUBE_KUBELET_HEALTHZ_PORT:-10248}/healthz" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "the kubelet does not answer on its /healthz"
  return 1
}
kit_up() { kubeconfig_line=$("$kit/up" --node 9>&-) && kubelet_healthy; }
kit_up || {
  echo "$kit/up --node failed; stopping what is left and trying again with the same state"
  component_logs
  "$kit/down" >/dev/null 2>&1 9>&- || true
  sleep 2
  kit_up
} || {
  echo "$kit/up --node failed twice; starting from a fresh state ($kube_state purged)"
  component_logs
  "$kit/down" --purge >/dev/null 2>&1 9>&- || true
  sleep 2
  kit_up
} || { component_logs; die "$kit/up --node failed three times (down, then down --purge, in between)"; }
eval "$kubeconfig_line"
export KUBECONFIG
[[ "$KUBECONFIG" == "${KUBE_STATE:-${TMPDIR:-/tmp}/mizzen-kube}/"* ]] || die "up gave an unexpected KUBECONFIG: $KUBECONFIG"
# Three Istio versions: the install, its in-place upgrade and a canary (README, "Upgrading").
"$kit/load-standins" --version 1.28.0 --version 1.28.1 --version 1.28.2 >/dev/null 9>&-
hack/build-images.sh >/dev/null 9>&-
# The build takes minutes; the node must still be up (the same state keeps the loaded images across a restart).
kubelet_healthy || {
  echo "restarting the kit with the same state"
  component_logs
  "$kit/down" >/dev/null 2>&1 9>&- || true
  sleep 2
  kit_up || { component_logs; die "$kit/up --node failed after the image build"; }
  eval "$kubeconfig_line"
  export KUBECONFIG
}
kubectl wait node --all --for=condition=Ready --timeout=120s >/dev/null || die "the node is not Ready"
kubectl get nodes
# An interrupted earlier run may have left mizzen installed (its pods would keep the old binaries): start clean.
if kubectl get namespace mizzen-system >/dev/null 2>&1 || kubectl get crd meshinstalls.mizzen.io >/dev/null 2>&1; then
  echo "removing what an earlier run left"
  kubectl delete -f config/samples/whoami/ --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete meshinstall --all --wait --timeout=120s >/dev/null 2>&1 || true
  kubectl delete -f config/bundle.yaml --ignore-not-found --wait --timeout=180s >/dev/null 2>&1 || true
  kubectl delete mutatingwebhookconfiguration -l app.kubernetes.io/managed-by=mizzen --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace e2e-churn --ignore-not-found --wait --timeout=120s >/dev/null 2>&1 || true
  kubectl label namespace default istio-injection- >/dev/null 2>&1 || true
  kubectl -n default delete pods --all --wait=false >/dev/null 2>&1 || true
fi

step "install (README)"
t_install=$(date +%s)
run_readme install
bundle_ready=$(since "$t_install")
kubectl -n mizzen-system get pods -o wide

step "mesh (README)"
t_mesh=$(date +%s)
run_readme mesh
mesh_ready=$(since "$t_mesh")
[[ "$(kubectl get meshinstall default -o jsonpath='{.status.ready}')" == "2/2" ]] && pass "READY 2/2" || fail "READY is not 2/2"
kubectl get meshinstall
kubectl -n istio-system get deployment istiod -o jsonpath='{.status.readyReplicas}' | grep -qx 1 && pass "istiod Ready" || fail "istiod not Ready"
np=$(kubectl -n istio-system get svc istio-ingressgateway -o jsonpath='{.spec.ports[?(@.name=="http2")].nodePort}')
[[ "$np" == 30080 ]] && pass "ingress gateway nodePort 30080" || fail "ingress gateway nodePort is '$np'"
mwc=mizzen-sidecar-injector
[[ -n "$(kubectl get mutatingwebhookconfiguration $mwc -o jsonpath='{.webhooks[0].clientConfig.service.name}')" ]] &&
  pass "the webhook configuration points at the in-cluster Service" || fail "the webhook configuration has no service reference"

step "no-op window: mutating API requests for the operator's kinds over 20 s"
# From the API server's own apiserver_request_total: writes to the kinds the operator manages (status
# subresources of workloads are their controllers'), plus MeshInstall status.
mutations() {
  kubectl get --raw /metrics | python3 -c '
import re, sys
kinds = {"customresourcedefinitions", "namespaces", "serviceaccounts", "clusterroles", "clusterrolebindings", "roles",
         "rolebindings", "configmaps", "deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets",
         "mutatingwebhookconfigurations", "secrets"}
total = 0
for line in sys.stdin:
    if not line.startswith("apiserver_request_total{"):
        continue
    labels = dict(re.findall(r"(\w+)=\"([^\"]*)\"", line))
    if labels.get("verb") not in {"POST", "PUT", "PATCH", "APPLY", "DELETE"}:
        continue
    res, sub = labels.get("resource"), labels.get("subresource", "")
    if (res in kinds and sub == "") or (res == "meshinstalls" and sub == "status"):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))'
}
sleep 5 # the components' last status changes settle
before=$(mutations)
kubectl annotate meshinstall default e2e.mizzen.io/poke="$(date +%s)" --overwrite >/dev/null
sleep 20
noop=$(($(mutations) - before))
[[ "$noop" == 0 ]] && pass "0 mutating requests in the no-op window" || fail "$noop mutating requests in the no-op window"

step "workloads (README)"
t_pods=$(date +%s)
run_readme workloads
kubectl rollout status deployment/whoami-v1 deployment/whoami-v2 deployment/whoami-opt-out --timeout=180s >/dev/null ||
  fail "whoami Deployments did not roll out"
pods_running=$(since "$t_pods")
kubectl get pods -l 'app in (whoami, whoami-opt-out)' -o wide

# proxy_held_app POD: the application container started only after the proxy reported ready (stand-in log line).
proxy_held_app() {
  local pod=$1 log ready_ep app_started app_ep
  log=$(kubectl logs "$pod" -c istio-proxy)
  ready_ep=$(sed -n 's/.*READY at .*(epoch \([0-9]*\)).*/\1/p' <<<"$log" | head -1)
  app_started=$(kubectl get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="whoami")].state.running.startedAt}')
  [[ -n "$ready_ep" && -n "$app_started" ]] || return 1
  app_ep=$(date -u -d "$app_started" +%s)
  echo "  $pod: proxy READY at epoch $ready_ep, app started at epoch $app_ep"
  ((app_ep >= ready_ep))
}
for app in whoami-v1 whoami-v2; do
  pod=$(kubectl get pods -l "app=whoami,version=${app#whoami-}" -o jsonpath='{.items[0].metadata.name}')
  phase=$(kubectl get pod "$pod" -o jsonpath='{.status.phase}')
  init=$(kubectl get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')
  [[ "$phase" == Running && "$init" == *istio-init* && "$init" == *istio-proxy* ]] &&
    pass "$pod Running with istio-init and istio-proxy (native sidecar)" || fail "$pod: phase $phase, init containers '$init'"
  proxy_held_app "$pod" && pass "$pod: the app started after the proxy was ready (native)" || fail "$pod: app started before the proxy was ready"
  kubectl describe deployment "$app" | grep -q 'Injected' && pass "$app: Injected Event" || fail "$app: no Injected Event"
done
pod=$(kubectl get pods -l app=whoami-opt-out -o jsonpath='{.items[0].metadata.name}')
names=$(kubectl get pod "$pod" -o jsonpath='{.spec.initContainers[*].name} {.spec.containers[*].name}')
[[ "$names" != *istio-proxy* ]] && pass "$pod (sidecar.istio.io/inject: \"false\") runs without a sidecar" || fail "$pod has a sidecar: $names"
kubectl describe deployment whoami-opt-out | grep -q 'InjectionSkipped' && pass "whoami-opt-out: InjectionSkipped Event" ||
  fail "whoami-opt-out: no InjectionSkipped Event"

step "classic layout (nativeSidecar: \"false\")"
kubectl patch meshinstall default --type=merge -p '{"spec":{"proxy":{"nativeSidecar":"false"}}}' >/dev/null
sleep 2 # the webhooks' MeshInstall watch
kubectl rollout restart deployment/whoami-v1 >/dev/null
kubectl rollout status deployment/whoami-v1 --timeout=120s >/dev/null || fail "whoami-v1 did not roll out in the classic layout"
pod=$(kubectl get pods -l app=whoami,version=v1 --field-selector=status.phase=Running -o json |
  python3 -c 'import json,sys; p=[i for i in json.load(sys.stdin)["items"] if not i["metadata"].get("deletionTimestamp")]; print(max(p, key=lambda i: i["metadata"]["creationTimestamp"])["metadata"]["name"])')
first=$(kubectl get pod "$pod" -o jsonpath='{.spec.containers[0].name}')
post=$(kubectl get pod "$pod" -o jsonpath='{.spec.containers[0].lifecycle.postStart.exec.command}')
[[ "$first" == istio-proxy && "$post" == *wait* ]] && pass "$pod: istio-proxy first with postStart pilot-agent wait" ||
  fail "$pod: first container $first, postStart $post"
proxy_held_app "$pod" && pass "$pod: the app started after the proxy was ready (classic)" || fail "$pod: app started before the proxy was ready (classic)"
kubectl patch meshinstall default --type=merge -p '{"spec":{"proxy":{"nativeSidecar":"auto"}}}' >/dev/null
kubectl wait meshinstall/default --for=condition=Ready --timeout=60s >/dev/null

step "least privilege (kubectl auth can-i)"
# expect SUBJECT yes|no VERB RESOURCE [ARGS...]
can_i() {
  local who=$1 want=$2; shift 2
  local got
  got=$(kubectl auth can-i "$@" --as="system:serviceaccount:mizzen-system:$who" 2>/dev/null || true)
  if [[ "$got" == "$want" ]]; then pass "$who can-i $*: $got"; else fail "$who can-i $*: $got, want $want"; fi
}
can_i mizzen-operator yes create secrets -n mizzen-system
can_i mizzen-operator no create secrets -n default
can_i mizzen-operator no delete secrets -n kube-system
can_i mizzen-operator yes create secrets -n istio-system
can_i mizzen-operator no escalate clusterroles
can_i mizzen-operator no bind clusterroles/cluster-admin
can_i mizzen-operator yes bind clusterroles/mizzen-operator-mesh-namespace
can_i mizzen-operator yes patch deployments -n istio-system
can_i mizzen-operator no create pods -n default
can_i mizzen-operator yes list pods --all-namespaces
can_i mizzen-operator no delete pods -n default
can_i mizzen-operator no create pods/eviction -n default
can_i mizzen-operator yes patch statefulsets -n default
can_i mizzen-operator no delete daemonsets -n default
can_i mizzen-operator no impersonate serviceaccounts
can_i mizzen-webhook yes get secrets/mizzen-webhook-tls -n mizzen-system
can_i mizzen-webhook no get secrets/mizzen-webhook-ca -n mizzen-system
can_i mizzen-webhook no list secrets -n mizzen-system
can_i mizzen-webhook yes watch namespaces
can_i mizzen-webhook no create pods -n default
can_i mizzen-webhook no patch meshinstalls
can_i mizzen-operator yes create rolebindings -n kube-system
# What RBAC allows above, the guardrails policy refuses at admission (server dry run: nothing is written).
# as_operator LABELLED WANT DESCRIPTION KUBECTL-CREATE-ARGS...: the object kubectl create would make (labelled as
# mizzen's when LABELLED is yes), created as the operator; WANT is "allowed" or the policy message expected.
as_operator() {
  local labelled=$1 want=$2 what=$3 manifest out; shift 3
  manifest=$(kubectl create "$@" --dry-run=client -o yaml)
  if [[ "$labelled" == yes ]]; then
    manifest=$(kubectl label --local -f - app.kubernetes.io/managed-by=mizzen -o yaml <<<"$manifest")
  fi
  if out=$(kubectl create -f - --dry-run=server --as=system:serviceaccount:mizzen-system:mizzen-operator \
    <<<"$manifest" 2>&1); then
    [[ "$want" == allowed ]] && pass "guardrails: $what allowed" || fail "guardrails: $what was allowed"
  elif [[ "$want" != allowed && "$out" == *mizzen-operator-guardrails*"$want"* ]]; then
    pass "guardrails: $what refused"
  else
    fail "guardrails: $what: $out (want $want)"
  fi
}
as_operator yes allowed "a ClusterRole labelled as mizzen's" clusterrole e2e-guard --verb=get --resource=pods
as_operator no "only write RBAC objects and webhook configurations that are mizzen's" \
  "a ClusterRole that is not mizzen's" clusterrole e2e-guard --verb=get --resource=pods
as_operator yes "may not write in kube-system" "a RoleBinding in kube-system" \
  rolebinding e2e-guard -n kube-system --clusterrole=mizzen-operator-mesh-namespace \
  --serviceaccount=mizzen-system:mizzen-operator
as_operator yes "may be bound only to the operator itself" "the mesh-namespace grants bound to another subject" \
  rolebinding e2e-guard -n default --clusterrole=mizzen-operator-mesh-namespace --serviceaccount=default:default
as_operator yes "may be bound only to the operator itself" "the mesh-namespace grants bound cluster-wide" \
  clusterrolebinding e2e-guard --clusterrole=mizzen-operator-mesh-namespace \
  --serviceaccount=mizzen-system:mizzen-operator
as_operator yes "may not write in kube-system" "a Deployment in kube-system" \
  deployment e2e-guard -n kube-system --image=docker.io/library/busybox:stable
webhook_pod=$(kubectl -n mizzen-system get pods -l app.kubernetes.io/name=mizzen-webhook -o jsonpath='{.items[0].metadata.name}')
mounts=$(kubectl -n mizzen-system get pod "$webhook_pod" -o jsonpath='{.spec.volumes[*].secret.secretName}')
[[ "$mounts" != *mizzen-webhook-ca* ]] && pass "the webhook mounts no CA key" || fail "the webhook mounts $mounts"
tunables=$(source hack/webhook-tunables.sh && webhook_tunables)
kubectl -n mizzen-system logs "$webhook_pod" | grep -aF "GLIBC_TUNABLES=[$tunables]" >/dev/null &&
  pass "the webhook runs with the image's GLIBC_TUNABLES ($tunables)" ||
  fail "the webhook's log shows no GLIBC_TUNABLES=$tunables"

# create_pods SECONDS RATE LOG: creates bare pods in the labelled namespace at RATE per second; one line per failure.
create_pods() {
  local seconds=$1 rate=$2 log=$3 end i=0
  end=$(($(date +%s) + seconds))
  : >"$log"
  : >"$log.err"
  while (($(date +%s) < end)); do
    for _ in $(seq "$rate"); do
      i=$((i + 1))
      # Never scheduled (no node matches): only the admission path is exercised.
      kubectl -n e2e-churn run "churn-$RANDOM-$i" --image=docker.io/traefik/whoami:v1.10 --restart=Never \
        --overrides='{"spec":{"nodeSelector":{"e2e.mizzen.io/never":"true"}}}' >/dev/null 2>>"$log.err" &
    done
    wait
    sleep 1
  done
  echo "$i" >"$log.count"
  grep -c . "$log.err" >"$log" || true
}
churn_result() { # LOG -> "created failed"
  echo "$(cat "$1.count") $(cat "$1")"
}

kubectl create namespace e2e-churn >/dev/null 2>&1 || true
kubectl label namespace e2e-churn istio-injection=enabled --overwrite >/dev/null

step "webhook TLS: the CA Secret deleted while pods are created"
create_pods 25 5 /tmp/e2e-tls &
churn=$!
bg_pids+=("$churn")
sleep 3
kubectl -n mizzen-system delete secret mizzen-webhook-ca >/dev/null
sleep 2
kubectl -n mizzen-system delete secret mizzen-webhook-tls >/dev/null
wait "$churn"
read -r created failed < <(churn_result /tmp/e2e-tls)
tls_failures=$failed
[[ "$failed" == 0 ]] && pass "$created pod creations during the CA change, 0 failed" ||
  { fail "$failed of $created pod creations failed during the CA change"; head -5 /tmp/e2e-tls.err; }
new_ca=$(kubectl -n mizzen-system get secret mizzen-webhook-ca -o jsonpath='{.data.ca\.crt}')
[[ -n "$new_ca" ]] && pass "a new CA was minted" || fail "no new CA"
kubectl -n e2e-churn delete pods --all --wait=false >/dev/null 2>&1 || true

step "webhook rollout while pods are created at 20/s"
create_pods 30 20 /tmp/e2e-rollout &
churn=$!
bg_pids+=("$churn")
sleep 3
kubectl -n mizzen-system rollout restart deployment/mizzen-webhook >/dev/null
kubectl -n mizzen-system rollout status deployment/mizzen-webhook --timeout=120s >/dev/null || fail "webhook rollout"
wait "$churn"
read -r created failed < <(churn_result /tmp/e2e-rollout)
rollout_failures=$failed
[[ "$failed" == 0 ]] && pass "$created pod creations during the webhook rollout, 0 failed" ||
  { fail "$failed of $created pod creations failed during the webhook rollout"; head -5 /tmp/e2e-rollout.err; }
kubectl delete namespace e2e-churn --wait=false >/dev/null 2>&1 || true

step "the CA change ends"
ca_settled() {
  [[ -z "$(kubectl -n mizzen-system get secret mizzen-webhook-ca -o jsonpath='{.metadata.annotations.mizzen\.io/previous-ca-until}')" ]]
}
wait_until 240 "the old CA is no longer trusted (transition over)" ca_settled || true
bundle_certs=$(kubectl get mutatingwebhookconfiguration mizzen-sidecar-injector -o jsonpath='{.webhooks[0].clientConfig.caBundle}' |
  base64 -d | grep -c 'BEGIN CERTIFICATE' || true)
[[ "$bundle_certs" == 1 ]] && pass "the webhook configuration trusts one CA again" || fail "caBundle holds $bundle_certs certificates"

step "addons (README)"
hack/load-addon-standins.sh >/dev/null 9>&-
t_addons=$(date +%s)
run_readme addons
addons_ready=$(since "$t_addons")
ready=$(kubectl get meshinstall default -o jsonpath='{.status.ready}')
[[ "$ready" == 5/5 ]] && pass "READY 5/5 (istiod, the gateway, three addons)" || fail "READY is '$ready', not 5/5"
for a in prometheus grafana jaeger; do
  r=$(kubectl get meshinstall default -o jsonpath="{.status.components.addons[?(@.name==\"$a\")].ready}")
  [[ "$r" == 1 ]] && pass "status.components.addons: $a ready" || fail "status.components.addons: $a ready is '$r'"
done
kubectl -n istio-system logs deployment/prometheus | grep -q 'can list pods in every namespace' &&
  pass "Prometheus discovers pods cluster-wide with its own ServiceAccount" || fail "Prometheus cannot list pods (its ClusterRole?)"
kubectl -n istio-system get configmap istio -o jsonpath='{.data.mesh}' | grep -q 'address: zipkin.istio-system:9411' &&
  pass "mesh config: the proxies' zipkin is the jaeger addon's Service" || fail "mesh config: no zipkin.istio-system:9411"
sampling=$(kubectl -n istio-system get deployment istiod -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="PILOT_TRACE_SAMPLING")].value}')
[[ "$sampling" == 100 ]] && pass "istiod traces 100% (spec.addons.jaeger.sampling)" || fail "PILOT_TRACE_SAMPLING is '$sampling'"
# Every addon Service answers from a pod (the kit has no cluster DNS: ClusterIPs).
urls=()
for s in "prometheus 9090 /-/ready" "grafana 3000 /api/health" "tracing 80 /jaeger/" "zipkin 9411 /api/v2/spans"; do
  read -r svc port path <<<"$s"
  urls+=("http://$(kubectl -n istio-system get svc "$svc" -o jsonpath='{.spec.clusterIP}'):$port$path")
done
kubectl -n istio-system run e2e-addon-probe --image=docker.io/library/busybox:stable --restart=Never --command -- \
  sh -c "$(printf 'timeout 10 wget -qO /dev/null %s && ' "${urls[@]}") true" >/dev/null
probe_done() { [[ "$(kubectl -n istio-system get pod e2e-addon-probe -o jsonpath='{.status.phase}')" == Succeeded ]]; }
wait_until 60 "prometheus:9090, grafana:3000, tracing:80 and zipkin:9411 answer from a pod" probe_done || true
kubectl -n istio-system delete pod e2e-addon-probe --wait=false >/dev/null 2>&1 || true
[[ "$(kubectl -n istio-system get virtualservice prometheus grafana tracing -o name | wc -l)" == 3 ]] &&
  kubectl -n istio-system get gateway addons >/dev/null &&
  pass "the addons' Gateway and VirtualServices are accepted" || fail "addons-gateway.yaml not applied"
# The no-op window again, now with the addons: a reconcile writes nothing.
before=$(mutations)
kubectl annotate meshinstall default e2e.mizzen.io/poke="$(date +%s)" --overwrite >/dev/null
sleep 20
noop_addons=$(($(mutations) - before))
[[ "$noop_addons" == 0 ]] && pass "0 mutating requests in the no-op window with the addons" || fail "$noop_addons mutating requests with the addons"


step "install order: no webhook configuration before a webhook pod is ready"
kubectl -n mizzen-system scale deployment/mizzen-webhook --replicas=0 >/dev/null
kubectl -n mizzen-system wait pod -l app.kubernetes.io/name=mizzen-webhook --for=delete --timeout=60s >/dev/null || true
cat <<EOF | kubectl apply -f - >/dev/null
apiVersion: mizzen.io/v1alpha1
kind: MeshInstall
metadata: {name: e2e-canary}
spec: {version: "1.28.0", revision: canary, namespace: istio-canary, gateways: []}
EOF
reason() { kubectl get meshinstall e2e-canary -o jsonpath='{.status.conditions[?(@.type=="Ready")].reason}'; }
waiting() { [[ "$(reason)" == WebhookNotReady ]]; }
wait_until 60 "a new MeshInstall waits for a ready webhook (Ready reason WebhookNotReady)" waiting || true
kubectl get mutatingwebhookconfiguration mizzen-sidecar-injector-canary >/dev/null 2>&1 &&
  fail "the canary webhook configuration exists before a webhook pod is ready" ||
  pass "no webhook configuration while no webhook pod is ready"
kubectl -n mizzen-system scale deployment/mizzen-webhook --replicas=2 >/dev/null
mwc_there() { kubectl get mutatingwebhookconfiguration mizzen-sidecar-injector-canary; }
wait_until 90 "the webhook configuration appears once a webhook pod is ready" mwc_there || true
kubectl delete meshinstall e2e-canary --timeout=120s >/dev/null
kubectl -n mizzen-system rollout status deployment/mizzen-webhook --timeout=120s >/dev/null

step "drift is reverted"
uid=$(kubectl -n istio-system get deployment istiod -o jsonpath='{.metadata.uid}')
kubectl -n istio-system delete deployment istiod --wait=false >/dev/null
kubectl -n istio-system patch service istio-ingressgateway -p '{"spec":{"ports":[{"port":80,"nodePort":30081}]}}' >/dev/null
istiod_back() { local u; u=$(kubectl -n istio-system get deployment istiod -o jsonpath='{.metadata.uid}') && [[ -n "$u" && "$u" != "$uid" ]]; }
wait_until 10 "deleted istiod Deployment recreated" istiod_back || true
node_port_back() { [[ "$(kubectl -n istio-system get svc istio-ingressgateway -o jsonpath='{.spec.ports[?(@.name=="http2")].nodePort}')" == 30080 ]]; }
wait_until 10 "edited gateway Service restored to nodePort 30080" node_port_back || true
kubectl wait meshinstall/default --for=condition=Ready --timeout=120s >/dev/null || fail "MeshInstall not Ready again after the drift"

step "disabled addons are pruned"
kubectl patch meshinstall default --type=merge -p '{"spec":{"addons":{"prometheus":{"enabled":false},"grafana":{"enabled":false}}}}' >/dev/null
addons_pruned() {
  local o
  for o in deployment/prometheus deployment/grafana service/prometheus service/grafana configmap/prometheus \
    configmap/grafana configmap/grafana-dashboards serviceaccount/prometheus serviceaccount/grafana; do
    kubectl -n istio-system get "$o" >/dev/null 2>&1 && return 1
  done
  ! kubectl get clusterrole/prometheus-istio-system >/dev/null 2>&1 &&
    ! kubectl get clusterrolebinding/prometheus-istio-system >/dev/null 2>&1
}
wait_until 60 "Prometheus' and Grafana's objects deleted, ClusterRole and ClusterRoleBinding included" addons_pruned || true
kubectl wait meshinstall/default --for=condition=Ready --timeout=60s >/dev/null || fail "MeshInstall not Ready after disabling addons"
ready=$(kubectl get meshinstall default -o jsonpath='{.status.ready}')
[[ "$ready" == 3/3 ]] && pass "READY 3/3 (jaeger still on)" || fail "READY is '$ready', not 3/3"
kubectl -n istio-system get deployment jaeger >/dev/null 2>&1 && pass "jaeger stays" || fail "jaeger was pruned too"

step "in-place upgrade (README): the outdated-proxy report, then the automatic rollout"
mi_json() { kubectl get meshinstall "$1" -o json; }
# jq-less JSON reads: py EXPRESSION over the MeshInstall as `m`.
mi_py() { mi_json "$1" | python3 -c "import json,sys; m=json.load(sys.stdin); print($2)"; }
injected=$(kubectl get pods -A -l service.istio.io/canonical-name -o json | python3 -c '
import json, sys
pods = json.load(sys.stdin)["items"]
print(sum(1 for p in pods if "sidecar.istio.io/status" in p["metadata"].get("annotations", {})
          and not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") not in ("Succeeded", "Failed")))')
proxies() { kubectl get meshinstall "$1" -o jsonpath='{.status.proxies}'; }
proxies_are() { [[ "$(proxies "$1")" == "$2" ]]; }
wait_until 60 "PROXIES $injected/$injected before the upgrade" proxies_are default "$injected/$injected" || true
t_upgrade=$(date +%s)
run_readme upgrade
wait_until 60 "PROXIES 0/$injected once spec.version is 1.28.1" proxies_are default "0/$injected" || true
kubectl get meshinstall default
outdated=$(mi_py default '" ".join(sorted(w["kind"] + "/" + w["name"] + ":" + str(w["pods"]) for w in m["status"]["dataPlane"]["outdated"]))')
[[ "$outdated" == "Deployment/whoami-v1:1 Deployment/whoami-v2:1" ]] &&
  pass "status.dataPlane.outdated lists whoami-v1 and whoami-v2 (1 pod each)" || fail "status.dataPlane.outdated: '$outdated'"
reason=$(kubectl get meshinstall default -o jsonpath='{.status.conditions[?(@.type=="ProxiesUpToDate")].reason}')
[[ "$reason" == Outdated ]] && pass "ProxiesUpToDate=False, reason Outdated" || fail "ProxiesUpToDate reason '$reason'"
ps_out=$(cargo run -q --bin mizzenctl -- proxy-status 2>&1)
echo "$ps_out"
grep -E '^default +Deployment/whoami-v1 .*outdated: proxy docker.io/istio/proxyv2:1.28.0; want docker.io/istio/proxyv2:1.28.1' <<<"$ps_out" >/dev/null &&
  pass "mizzenctl proxy-status names the outdated workloads" || fail "mizzenctl proxy-status does not show whoami-v1 outdated"
istiod_image() { kubectl -n istio-system get deployment istiod -o jsonpath='{.spec.template.spec.containers[0].image}'; }
[[ "$(istiod_image)" == docker.io/istio/pilot:1.28.1 ]] && pass "istiod runs pilot:1.28.1" || fail "istiod runs $(istiod_image)"
# The rollout: watch how many workloads restart at once while it runs. The count is replaced atomically (written
# aside, then renamed), so stopping the watcher mid-write never leaves an empty file.
max_file=$(mktemp)
echo 0 >"$max_file"
(
  max=0
  for _ in $(seq 300); do
    n=$( (kubectl get meshinstall default -o jsonpath='{.status.dataPlane.restarting[*].name}' 2>/dev/null || true) | wc -w)
    ((n > max)) && max=$n
    echo "$max" >"$max_file.next" && mv -f "$max_file.next" "$max_file"
    sleep 0.5
  done
) &
watcher=$!
bg_pids+=("$watcher")
t_rollout=$(date +%s)
run_readme rollout
rollout_s=$(since "$t_rollout")
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
max_restarting=$(cat "$max_file")
rm -f "$max_file" "$max_file.next"
[[ "$max_restarting" == 1 ]] && pass "one workload restarted at a time (maxConcurrent 1)" ||
  fail "$max_restarting workloads restarted at once"
wait_until 60 "PROXIES $injected/$injected after the automatic rollout ($rollout_s s)" proxies_are default "$injected/$injected" || true
for app in whoami-v1 whoami-v2; do
  restarted=$(kubectl get deployment "$app" -o jsonpath='{.metadata.annotations.mizzen\.io/restarted-for}')
  [[ "$restarted" == default@docker.io/istio/proxyv2:1.28.1 ]] && pass "$app restarted for default@proxyv2:1.28.1" ||
    fail "$app: restarted-for '$restarted'"
  kubectl describe deployment "$app" | grep -q ProxyUpgrade && pass "$app: ProxyUpgrade Event" || fail "$app: no ProxyUpgrade Event"
done
proxy_images() { # NAMESPACE -> the istio-proxy images of its whoami pods that are not terminating
  kubectl -n "$1" get pods -l app=whoami -o json | python3 -c '
import json, sys
images = set()
for p in json.load(sys.stdin)["items"]:
    if p["metadata"].get("deletionTimestamp"):
        continue
    for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]:
        if c["name"] == "istio-proxy":
            images.add(c["image"])
print(" ".join(sorted(images)))'
}
images_are() { [[ "$(proxy_images "$1")" == "$2" ]]; }
wait_until 60 "the whoami pods run proxyv2:1.28.1" images_are default docker.io/istio/proxyv2:1.28.1 || true
kubectl patch meshinstall default --type=merge -p '{"spec":{"dataPlane":{"rollout":"Manual"}}}' >/dev/null
upgrade_s=$(since "$t_upgrade")

step "canary with a revision tag (README)"
t_canary=$(date +%s)
run_readme canary
kubectl -n shop rollout status deployment/whoami-v1 deployment/whoami-v2 --timeout=180s >/dev/null || fail "shop's whoami did not roll out"
pod_revisions() { # NAMESPACE -> the revisions that injected its running pods
  kubectl -n "$1" get pods -o json | python3 -c '
import json, sys
revs = set()
for p in json.load(sys.stdin)["items"]:
    if p["metadata"].get("deletionTimestamp"):
        continue
    s = p["metadata"].get("annotations", {}).get("sidecar.istio.io/status")
    revs.add(json.loads(s).get("revision") if s else "none")
print(" ".join(sorted(revs)))'
}
[[ "$(pod_revisions shop)" == default ]] && pass "shop (istio.io/rev=prod) injected by the default revision, which holds prod" ||
  fail "shop's pods were injected by '$(pod_revisions shop)'"
tag_owner() { kubectl get mutatingwebhookconfiguration mizzen-revision-tag-prod -o jsonpath='{.metadata.labels.mizzen\.io/meshinstall} {.webhooks[0].clientConfig.service.path}'; }
[[ "$(tag_owner)" == "default /inject" ]] && pass "mizzen-revision-tag-prod is the default install's (path /inject)" ||
  fail "mizzen-revision-tag-prod: '$(tag_owner)'"
tag_uid=$(kubectl get mutatingwebhookconfiguration mizzen-revision-tag-prod -o jsonpath='{.metadata.uid}')
# Pods are created in shop during the move: none may miss its sidecar.
(
  : >/tmp/e2e-move.out
  for i in $(seq 40); do
    kubectl -n shop run "move-$i" --image=docker.io/traefik/whoami:v1.10 --restart=Never \
      --overrides='{"spec":{"nodeSelector":{"e2e.mizzen.io/never":"true"}}}' -o jsonpath='{.metadata.annotations.sidecar\.istio\.io/status}{"\n"}' \
      >>/tmp/e2e-move.out 2>/dev/null || echo FAILED >>/tmp/e2e-move.out
    sleep 0.25
  done
) &
mover=$!
bg_pids+=("$mover")
t_move=$(date +%s)
run_readme move-tag
moved() { [[ "$(tag_owner)" == "canary /inject/canary" ]]; }
wait_until 60 "mizzen-revision-tag-prod moves to the canary (path /inject/canary)" moved || true
move_s=$(since "$t_move")
[[ "$(kubectl get mutatingwebhookconfiguration mizzen-revision-tag-prod -o jsonpath='{.metadata.uid}')" == "$tag_uid" ]] &&
  pass "the tag's webhook configuration was taken over in place" || fail "the tag's webhook configuration was replaced"
wait "$mover" || true
missing=$(grep -vc 'istio-proxy' /tmp/e2e-move.out || true)
[[ "$missing" == 0 ]] && pass "$(grep -c . /tmp/e2e-move.out) pods created in shop during the move, all with a sidecar" ||
  fail "$missing pods created in shop during the move without a sidecar (or refused)"
kubectl -n shop delete pods -l run --wait=false >/dev/null 2>&1 || true
kubectl wait meshinstall/canary --for=condition=Reconciled --timeout=60s >/dev/null &&
  pass "the canary holds prod (Reconciled)" || fail "the canary is not Reconciled after the move"
tags=$(kubectl get meshinstall canary -o jsonpath='{.status.revisionTags}')
[[ "$tags" == '["prod"]' ]] && pass "canary status.revisionTags [prod]" || fail "canary status.revisionTags '$tags'"
kubectl -n shop rollout status deployment/whoami-v1 deployment/whoami-v2 --timeout=180s >/dev/null || fail "shop's restart did not roll out"
shop_on_canary() { [[ "$(pod_revisions shop)" == canary ]]; }
wait_until 60 "shop's pods injected by the canary after the restart" shop_on_canary || true
wait_until 60 "canary PROXIES 2/2" proxies_are canary 2/2 || true
wait_until 60 "shop's whoami runs proxyv2:1.28.2" images_are shop docker.io/istio/proxyv2:1.28.2 || true
canary_s=$(since "$t_canary")
kubectl delete namespace shop --wait=false >/dev/null
kubectl delete meshinstall canary --timeout=120s >/dev/null || fail "deleting the canary"
# Its children go by the garbage collector, after the MeshInstall (background propagation): not at once.
tag_gone() { local o; o=$(kubectl get mutatingwebhookconfiguration mizzen-revision-tag-prod --ignore-not-found -o name) && [[ -z "$o" ]]; }
wait_until 30 "the tag's webhook configuration went with the canary (garbage collector)" tag_gone || true

# --- in "uninstall (README)": the left-behind check also looks for the addon's ClusterRole ---
# left+=$(kubectl get clusterroles,clusterrolebindings -o name | grep -E 'mizzen|istiod|istio-ingressgateway|prometheus-istio-system' || true)

if ((failures > 0)); then
  step "diagnostics"
  kubectl get meshinstall -o wide || true
  kubectl -n mizzen-system logs deploy/mizzen-operator --tail=400 2>/dev/null | grep -aE 'WARN|ERROR' | tail -20 || true
  kubectl get rolebindings -A -l app.kubernetes.io/managed-by=mizzen || true
fi

step "uninstall (README)"
run_readme uninstall
leftovers() {
  kubectl get deployments,services,configmaps,serviceaccounts,roles,rolebindings,secrets,horizontalpodautoscalers,poddisruptionbudgets \
    -A -l app.kubernetes.io/managed-by=mizzen -o name 2>/dev/null
  kubectl get clusterroles,clusterrolebindings,mutatingwebhookconfigurations -l app.kubernetes.io/managed-by=mizzen -o name 2>/dev/null
  kubectl get clusterroles,clusterrolebindings -o name | grep -E 'mizzen|istiod|istio-ingressgateway|prometheus-istio-system' || true
}
nothing_left() { [[ -z "$(leftovers)" ]]; }
# The MeshInstall's objects go by the garbage collector after `kubectl delete` returns (background propagation).
wait_until 60 "nothing of mizzen's is left" nothing_left || echo "left behind: $(leftovers)"
kubectl get namespace mizzen-system >/dev/null 2>&1 && fail "namespace mizzen-system is still there" || pass "namespace mizzen-system is gone"
kubectl get crd meshinstalls.mizzen.io >/dev/null 2>&1 && fail "the MeshInstall CRD is still there" || pass "the MeshInstall CRD is gone"
kubectl get crd virtualservices.networking.istio.io >/dev/null 2>&1 && pass "Istio's CRDs stay (user resources survive)" ||
  fail "Istio's CRDs were removed"
kubectl get virtualservice whoami >/dev/null 2>&1 && pass "the user's VirtualService survived" || fail "the user's VirtualService is gone"
kubectl run e2e-after-uninstall --image=docker.io/traefik/whoami:v1.10 --restart=Never >/dev/null &&
  pass "pods are still created in the labelled namespace (no dangling webhook)" || fail "pod creation fails after the uninstall"

step "clean up the default namespace"
kubectl delete pod e2e-after-uninstall --wait=false >/dev/null 2>&1 || true
kubectl delete -f config/samples/whoami/ --ignore-not-found --wait=false >/dev/null 2>&1 || true
kubectl label namespace default istio-injection- >/dev/null 2>&1 || true

echo
summary="bundle Ready ${bundle_ready} s, MeshInstall Ready ${mesh_ready} s, pods Running ${pods_running} s, no-op mutating requests ${noop}, pod creations failed during CA change ${tls_failures} and webhook rollout ${rollout_failures}, addons Ready ${addons_ready} s, in-place upgrade ${upgrade_s} s (automatic rollout ${rollout_s} s, at most ${max_restarting} restarting), canary ${canary_s} s (tag moved in ${move_s} s), total $(since "$t0") s"
if ((failures > 0)); then
  echo "e2e: FAILED ($failures failures; $summary)"
  exit 1
fi
echo "e2e: passed ($summary)"
