#!/usr/bin/env python3
"""Writes seed inputs for the fuzz targets (tests/fuzz) from the project's fixtures and Istio's injection corpus.

hack/fuzz-seeds.py OUT_DIR [CONFORMANCE_DIR]   (CONFORMANCE_DIR defaults to ../shared/conformance/istio-inject)
Creates OUT_DIR/<target>/ for admission_review, kube_inject, annotations, meshinstall, gotemplate, yaml_fast.
"""
import hashlib
import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1])
conformance = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else ROOT.parent / "shared/conformance/istio-inject")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def review(pod, namespace="shop", kind="Pod", sub=None):
    request = {
        "uid": "a1b2c3d4-0000-4000-8000-000000000000",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": kind.lower() + "s"},
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod,
    }
    if sub:
        request["subResource"] = sub
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


fixtures = sorted((ROOT / "webhook/tests/fixtures").glob("*.json"))
for f in fixtures:
    if f.stat().st_size < 20000:
        write("admission_review", f.read_bytes())

inputs = [ROOT / "config/samples/whoami/deployments.yaml"]
if conformance.is_dir():
    inputs += sorted(p for p in conformance.glob("*.yaml") if not p.name.endswith(".iop.yaml"))
annotation_values = {}
for path in inputs:
    text = path.read_text()
    write("kube_inject", text)
    # yaml_fast reads one document: the documents of each input, and of its injected output when there is one.
    for source in [text] + ([path.with_name(path.name + ".injected").read_text()]
                            if path.with_name(path.name + ".injected").is_file() else []):
        for doc in re.split(r"(?m)^---[ \t]*$\n?", source):
            if doc.strip() and len(doc.encode()) <= 8192:
                write("yaml_fast", doc)
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError:
        continue
    for doc in docs:
        template = (doc.get("spec") or {}).get("template") if doc.get("kind") != "Pod" else doc
        if not isinstance(template, dict):
            continue
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata") or {}, "spec": template.get("spec") or {}}
        write("admission_review", review(pod))
        for k, v in ((pod["metadata"].get("annotations") or {}).items()):
            annotation_values.setdefault(k, set()).add(str(v))

pod = json.loads(review({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}))["request"]["object"]
write("admission_review", review(pod, kind="Secret"))
write("admission_review", review(pod, sub="status"))

# The annotations target: first byte selects the annotation (same order as KEYS in fuzz_targets/annotations.rs).
keys = [
    "traffic.sidecar.istio.io/includeOutboundIPRanges", "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeInboundPorts", "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts", "traffic.sidecar.istio.io/excludeOutboundPorts",
    "sidecar.istio.io/interceptionMode", "status.sidecar.istio.io/port",
    "readiness.status.sidecar.istio.io/initialDelaySeconds", "readiness.status.sidecar.istio.io/periodSeconds",
    "readiness.status.sidecar.istio.io/failureThreshold", "sidecar.istio.io/proxyCPU", "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyCPULimit", "sidecar.istio.io/proxyMemoryLimit", "sidecar.istio.io/userVolume",
    "sidecar.istio.io/userVolumeMount", "sidecar.istio.io/nativeSidecar", "sidecar.istio.io/rewriteAppHTTPProbers",
    "sidecar.istio.io/enableCoreDump", "sidecar.istio.io/capNetBindService", "prometheus.istio.io/merge-metrics",
    "sidecar.istio.io/logLevel", "sidecar.istio.io/componentLogLevel", "sidecar.istio.io/agentLogLevel",
    "sidecar.istio.io/bootstrapOverride", "proxy.istio.io/config", "inject.istio.io/templates",
    "sidecar.istio.io/status", "proxy.istio.io/overrides", "sidecar.istio.io/proxyImage",
    "k8s.v1.cni.cncf.io/networks", "traffic.sidecar.istio.io/kubevirtInterfaces",
    "traffic.sidecar.istio.io/excludeInterfaces", "sidecar.istio.io/inject",
]
typical = {
    0: ["10.0.0.0/8,fd00::/8", "*"], 2: ["80,443", "*"], 6: ["TPROXY"], 7: ["15020"], 8: ["10"],
    11: ["100m"], 12: ["128Mi"], 13: ["2"], 14: ["1Gi"], 15: ['{"v":{"emptyDir":{}}}'],
    16: ['{"data":{"mountPath":"/data","readOnly":true}}'], 17: ["true"], 19: ["true"], 22: ["debug"],
    23: ["misc:error,upstream:debug"], 24: ["default:info"], 25: ["my-bootstrap"],
    26: ["holdApplicationUntilProxyStarts: true\nproxyMetadata:\n  A: b\n"], 27: ["sidecar,gateway"],
    28: ['{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":null,"imagePullSecrets":null}'],
    29: ['{"containers":[{"name":"istio-proxy","image":"x"}]}'], 30: ["docker.io/istio/proxyv2:1.28.0"],
    31: ['[{"name": "a"}]'],
}
for i, key in enumerate(keys):
    values = set(typical.get(i, ["x"])) | annotation_values.get(key, set())
    for v in sorted(values):
        write("annotations", bytes([i]) + v.encode())

sample = (ROOT / "config/samples/meshinstall.yaml").read_text()
write("meshinstall", sample)
write("meshinstall", sample.replace('revision: ""', 'revision: "canary"'))
write("meshinstall", "apiVersion: mizzen.io/v1alpha1\nkind: MeshInstall\nmetadata: {name: m}\nspec:\n  gateways:\n  - {name: istio-egressgateway, kind: egress, service: {type: ClusterIP, ports: [{name: http, port: 80, targetPort: 8080}]}}\n")
# The gotemplate target: template text. The user templates of Istio's corpus (the IstioOperator overlays'
# sidecarInjectorWebhook.templates, and values that are Go templates), the unit tests' templates, and one small
# template per function and construct the interpreter supports.
def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


if conformance.is_dir():
    for path in sorted(conformance.glob("*.iop.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        templates = (((doc.get("spec") or {}).get("values") or {}).get("sidecarInjectorWebhook") or {}).get("templates")
        for text in (templates or {}).values():
            write("gotemplate", text)
        for text in strings(doc):
            if "{{" in text:
                write("gotemplate", text)


def rust_unescape(s):
    escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}
    return re.sub(r"\\(u\{[0-9a-fA-F]+\}|x[0-9a-fA-F]{2}|.)",
                  lambda m: chr(int(m.group(1)[2:-1] if m.group(1)[0] == "u" else m.group(1)[1:], 16))
                  if m.group(1)[0] in "ux" and len(m.group(1)) > 1 else escapes.get(m.group(1), m.group(1)), s)


for source in ["src/inject/gotemplate.rs", "src/inject/mod.rs"]:
    text = (ROOT / source).read_text()
    tests = text[text.find("#[cfg(test)]"):]
    for literal in re.findall(r'"((?:[^"\\]|\\.)*)"', tests, re.S):
        if "{{" in literal:
            write("gotemplate", rust_unescape(literal))

for text in [
    "{{ and 1 0 }} {{ or 0 \"x\" }} {{ not .A }} {{ and }} {{ .A | or 1 }}",
    "{{ eq 1 1.0 2 }} {{ ne \"a\" \"b\" }} {{ lt 1 2 }} {{ le 1.5 2 }} {{ gt \"b\" \"a\" }} {{ ge -2 2 }}",
    "{{ len .Spec.Containers }} {{ len .ObjectMeta.Name }} {{ len .Nothing }}",
    "{{ index .ObjectMeta.Labels \"app\" }} {{ index .Spec.Containers 0 \"name\" }} {{ (index .Spec.Containers 1).Name }}",
    "{{ print 1 \"a\" nil true }}{{ println \"x\" 2 }}{{ printf \"%s-%d-%q-%v%% %\" \"a\" 1 \"q\" }}",
    "{{ isset .ObjectMeta.Annotations \"team\" }} {{ annotation .ObjectMeta \"team\" \"none\" }}",
    "{{ valueOrDefault .X \"d\" }} {{ default \"x\" .Revision }} {{ env \"A\" \"b\" }} {{ empty \"\" }}",
    "{{ toJSON .ObjectMeta }} {{ toJson 1 }} {{ structToJSON .MeshConfig }} {{ protoToJSON .ProxyConfig }}",
    "{{ $m := fromJSON \"{\\\"a\\\": [1, 2.5, null]}\" }}{{ $m.a }} {{ fromJson `\"s\"` }}",
    "spec:\n  containers:\n  {{- toYaml .Spec.Containers | nindent 2 }}\n  x: {{ toYaml .Values.global.proxy.resources | indent 4 }}",
    "{{ omit .ObjectMeta.Labels \"app\" \"version\" }} {{ dict \"a\" 1 \"b\" }} {{ quote \"a\" 1 }} {{ squote \"b\" }}",
    "{{ toLower \"AB\" }}{{ lower \"Ä\" }}{{ toUpper \"a\" }}{{ upper \"ß\" }}{{ trim \"  x \" }}",
    "{{ contains \"a\" \"cat\" }} {{ hasPrefix \"c\" \"cat\" }} {{ hasSuffix \"t\" \"cat\" }}",
    "{{ replace \"a\" \"o\" \"banana\" }} {{ replace \"\" \"-\" \"abc\" }} {{ split \",\" \"a,b\" }} {{ splitList \"\" \"ab\" }}",
    "{{ join \",\" (list 1 2 \"x\") }} {{ join \"-\" .Revision }} {{ indent 2 \"a\\nb\" }} {{ nindent 3 `c` }}",
    "{{ $l := list 1 }}{{ $l = append $l 2 }}{{ $l = mustAppend $l (list 3) }}{{ range $i, $v := $l }}{{ $i }}={{ $v }},{{ end }}",
    "{{ range .ObjectMeta.Labels }}{{ . }}{{ else }}none{{ end }}{{ range $k, $v := .ObjectMeta.Annotations }}{{ $k }}{{ end }}",
    "{{ range 3 }}{{ . }}{{ end }}{{ range .Nothing }}x{{ else }}empty{{ end }}",
    "{{ with .DeploymentMeta }}{{ .Name }}.{{ .Namespace }}{{ else }}-{{ end }}{{ with $x := .Revision }}{{ $x }}{{ end }}",
    "{{ if .NativeSidecars }}a{{ else if eq .ProxyUID 1337 }}b{{ else if $v := .Values }}{{ $v.global.hub }}{{ else }}d{{ end }}",
    "{{ define \"c\" }}- name: {{ .Name }}\n{{ end }}containers:\n{{ range .Spec.Containers }}{{ template \"c\" . }}{{ end }}{{ template \"c\" }}",
    "{{/* comment */}}a {{- /* trimmed */ -}} b {{- \"x\" -}} \n c",
    "{{ $a, $b := 1 }}{{ $a }}{{ $ := 2 }}{{ $.TypeMeta.Kind }}{{ $c := (.Spec).Containers }}{{ ($c) }}",
    "{{ .TypeMeta.APIVersion }} {{ .ObjectMeta.name }} {{ .objectmeta.NAME }} {{ .A.B.C }} {{ .Spec.Containers.x }}",
    "{{ `raw \\n` }} {{ \"esc\\t\\\"\\\\\" }} {{ 1.5 }} {{ -3 }} {{ 99999999999999999999 }} {{ nil }} {{ true }}",
]:
    write("gotemplate", text)

for d in sorted(out.iterdir()):
    print(f"{d.name}: {len(list(d.iterdir()))} seeds")
