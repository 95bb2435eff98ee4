//! `mizzenctl convert` end to end: each source format (an istioctl command line, IstioOperator files, a Sail Istio)
//! from files written for these tests, checked field by field, against the CRD schema's CEL rules and through
//! `render`; bad inputs give errors that name the culprit; and the binary's stdout, stderr and exit code.

use std::path::Path;
use std::process::Command;

use kube::core::cel::Validator;
use mizzen::api::{ExternalTrafficPolicy, GatewayKind, MeshInstall, NativeSidecarMode, ServiceType};
use mizzen::convert::{Conversion, ConvertError, Source, convert, parse_command};
use mizzen::render::{RenderOptions, render};
use serde_json::{Value, json};

const SEED: &str = "istioctl install --set values.global.proxy.holdApplicationUntilProxyStarts=true \
    --set values.gateways.istio-ingressgateway.type=NodePort \
    --set meshConfig.accessLogFile=/dev/stdout --set meshConfig.accessLogEncoding=JSON";

fn file(name: &str) -> Source {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/convert").join(name);
    Source {
        name: name.to_owned(),
        text: std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    }
}

fn inline(name: &str, text: &str) -> Source {
    Source {
        name: name.to_owned(),
        text: text.to_owned(),
    }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn istioctl(command: &str) -> Result<Conversion, ConvertError> {
    let cmd = parse_command(&words(command))?;
    assert!(cmd.files.is_empty(), "these command lines read no files");
    convert(&[], &cmd.sets)
}

fn lines(c: &Conversion) -> Vec<String> {
    c.unsupported.iter().map(ToString::to_string).collect()
}

/// The printed MeshInstall: read back as the API server and `render` would read it, it must equal what was
/// converted, pass every CEL rule of the CRD, and render.
fn printed(c: &Conversion) -> (String, Vec<Value>) {
    let yaml = c.to_yaml().unwrap();
    let doc = mizzen::yaml::parse_documents(&yaml).unwrap().remove(0);
    let back: MeshInstall = serde_json::from_value(doc.clone()).unwrap();
    assert_eq!(back, c.mesh_install, "printing must only leave out defaults:\n{yaml}");
    let crd = mizzen::crd::meshinstall_crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap(),
    )
    .unwrap();
    if let Err(errors) = Validator::new().validate(&schema, &doc, None) {
        panic!("CEL rules refuse the converted MeshInstall: {errors:?}\n{yaml}");
    }
    let objects = render(&back, &RenderOptions::default()).unwrap();
    (yaml, objects)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name} not rendered"))
}

fn rendered_mesh(objects: &[Value], config_map: &str) -> Value {
    let text = find(objects, "ConfigMap", config_map)["data"]["mesh"].as_str().unwrap();
    mizzen::yaml::parse_documents(text).unwrap().remove(0)
}

fn env(deployment: &Value, name: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

#[test]
fn the_workshop_command_gives_its_mesh_with_nothing_left_over() {
    let c = istioctl(SEED).unwrap();
    assert_eq!(lines(&c), Vec::<String>::new());
    let (yaml, objects) = printed(&c);
    // istioctl's default profile: istiod and one ingress gateway, both autoscaled 1 to 5 at 80% CPU, the gateway on
    // the chart's three ports; everything else is the MeshInstall's default.
    let expected = r#"apiVersion: mizzen.io/v1alpha1
kind: MeshInstall
metadata:
  name: default
spec:
  version: "1.28.0"
  hub: docker.io/istio
  namespace: istio-system
  meshConfig:
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
  proxy:
    holdApplicationUntilProxyStarts: true
  controlPlane:
    autoscale:
      min: 1
      max: 5
      targetCPUUtilizationPercentage: 80
  gateways:
  - name: istio-ingressgateway
    kind: ingress
    autoscale:
      min: 1
      max: 5
      targetCPUUtilizationPercentage: 80
    service:
      type: NodePort
      ports:
      - name: status-port
        port: 15021
        targetPort: 15021
      - name: http2
        port: 80
        targetPort: 8080
      - name: https
        port: 443
        targetPort: 8443
"#;
    assert_eq!(yaml, expected);
    let service = find(&objects, "Service", "istio-ingressgateway");
    assert_eq!(service["spec"]["type"], "NodePort");
    let mesh = rendered_mesh(&objects, "istio");
    assert_eq!(mesh["accessLogFile"], "/dev/stdout");
    assert_eq!(mesh["accessLogEncoding"], "JSON");
    assert_eq!(mesh["defaultConfig"]["holdApplicationUntilProxyStarts"], true);
    let injection = mizzen::inject::InjectionConfig::from_mesh_install(&c.mesh_install.spec);
    assert!(injection.proxy.hold_application_until_proxy_starts);
    find(&objects, "HorizontalPodAutoscaler", "istiod");
    find(&objects, "HorizontalPodAutoscaler", "istio-ingressgateway");
}

#[test]
fn a_demo_profile_install_keeps_both_gateways_and_the_demo_settings() {
    let c = convert(&[file("demo-install.yaml")], &[]).unwrap();
    assert_eq!(lines(&c), Vec::<String>::new());
    let spec = &c.mesh_install.spec;
    assert_eq!(
        (spec.version.as_str(), spec.hub.as_str()),
        ("1.28.0", "docker.io/istio")
    );
    assert_eq!(spec.mesh_config.access_log_file.as_deref(), Some("/dev/stdout"));
    assert_eq!(
        serde_json::to_value(spec.mesh_config.access_log_encoding).unwrap(),
        "JSON"
    );
    let providers: Vec<&str> = spec.mesh_config.rest["extensionProviders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["otel", "skywalking", "otel-tracing", "jaeger"]);
    assert!(spec.proxy.hold_application_until_proxy_starts);
    // demo lowers requests and keeps the charts' limits (2000m and 1024Mi, printed canonically).
    let q = |m: &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
             k: &str| { m[k].0.clone() };
    assert_eq!(q(&spec.proxy.resources.requests, "cpu"), "10m");
    assert_eq!(q(&spec.proxy.resources.limits, "memory"), "1Gi");
    assert_eq!(spec.control_plane.autoscale, None);
    assert_eq!(spec.control_plane.replicas, 1);
    let istiod = spec.control_plane.resources.as_ref().unwrap();
    assert_eq!(
        (q(&istiod.requests, "cpu"), q(&istiod.requests, "memory")),
        ("10m".into(), "100Mi".into())
    );
    assert_eq!(spec.control_plane.env["PILOT_TRACE_SAMPLING"], "100");

    let names: Vec<(&str, GatewayKind, ServiceType)> = spec
        .gateways
        .iter()
        .map(|g| (g.name.as_str(), g.kind, g.service_type()))
        .collect();
    assert_eq!(
        names,
        [
            ("istio-ingressgateway", GatewayKind::Ingress, ServiceType::LoadBalancer),
            ("istio-egressgateway", GatewayKind::Egress, ServiceType::ClusterIp),
        ]
    );
    let ingress = &spec.gateways[0];
    let ports: Vec<(&str, i32, Option<i32>)> = ingress
        .service
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.target_port))
        .collect();
    assert_eq!(
        ports,
        [
            ("status-port", 15021, Some(15021)),
            ("http2", 80, Some(8080)),
            ("https", 443, Some(8443)),
            ("tcp", 31400, Some(31400)),
            ("tls", 15443, Some(15443)),
        ]
    );
    for g in &spec.gateways {
        assert_eq!(g.autoscale, None, "{}: demo turns autoscaling off", g.name);
        let r = g.resources.as_ref().unwrap();
        assert_eq!(
            (q(&r.requests, "memory"), q(&r.limits, "cpu")),
            ("40Mi".into(), "2".into())
        );
    }

    let (_, objects) = printed(&c);
    assert_eq!(
        env(find(&objects, "Deployment", "istiod"), "PILOT_TRACE_SAMPLING").as_deref(),
        Some("100")
    );
    assert_eq!(
        find(&objects, "Service", "istio-egressgateway")["spec"]["type"],
        "ClusterIP"
    );
    assert_eq!(
        find(&objects, "Service", "istio-ingressgateway")["spec"]["ports"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "HorizontalPodAutoscaler"),
        "demo has no autoscalers"
    );
}

#[test]
fn a_two_gateway_operator_keeps_each_gateways_scaling_resources_and_service() {
    let c = convert(&[file("two-gateways.yaml")], &[]).unwrap();
    assert_eq!(
        lines(&c),
        [
            r#"components.ingressGateways[name:istio-internal-gateway].k8s.nodeSelector={"node-role.kubernetes.io/edge":""}: no MeshInstall equivalent"#
        ]
    );
    let spec = &c.mesh_install.spec;
    assert_eq!(c.mesh_install.metadata.name.as_deref(), Some("stable"));
    assert_eq!(spec.revision, "stable");
    assert_eq!(spec.mesh_config.rest["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
    assert_eq!(spec.proxy.log_level, "info");
    assert_eq!(spec.control_plane.replicas, 2);
    assert_eq!(spec.control_plane.autoscale, None);
    assert_eq!(
        spec.control_plane.resources.as_ref().unwrap().requests["memory"].0,
        "4Gi"
    );
    assert_eq!(spec.control_plane.env["PILOT_ENABLE_STATUS"], "true");

    assert_eq!(spec.gateways.len(), 2);
    let public = &spec.gateways[0];
    assert_eq!(public.name, "istio-ingressgateway");
    let a = public.autoscale.as_ref().unwrap();
    assert_eq!((a.min, a.max, a.target_cpu_utilization_percentage), (3, 10, 60));
    let r = public.resources.as_ref().unwrap();
    assert_eq!(
        (r.requests["cpu"].0.as_str(), r.limits["memory"].0.as_str()),
        ("500m", "2Gi")
    );
    assert_eq!(public.service_type(), ServiceType::NodePort);
    assert_eq!(
        public.service.external_traffic_policy,
        Some(ExternalTrafficPolicy::Local)
    );
    let node_ports: Vec<Option<i32>> = public.service.ports.iter().map(|p| p.node_port).collect();
    assert_eq!(node_ports, [None, Some(30080), Some(30443)]);

    let internal = &spec.gateways[1];
    assert_eq!(
        (internal.name.as_str(), internal.kind),
        ("istio-internal-gateway", GatewayKind::Ingress)
    );
    let a = internal.autoscale.as_ref().unwrap();
    assert_eq!((a.min, a.max, a.target_cpu_utilization_percentage), (2, 4, 80));
    let r = internal.resources.as_ref().unwrap();
    // The k8s patch sets requests; the chart's limits stay.
    assert_eq!(
        (r.requests["cpu"].0.as_str(), r.limits["cpu"].0.as_str()),
        ("200m", "2")
    );
    assert_eq!(internal.service_type(), ServiceType::LoadBalancer);
    assert_eq!(
        internal.service.annotations["service.beta.kubernetes.io/aws-load-balancer-internal"],
        "true"
    );

    let (_, objects) = printed(&c);
    assert_eq!(find(&objects, "Deployment", "istiod-stable")["spec"]["replicas"], 2);
    let hpa = find(&objects, "HorizontalPodAutoscaler", "istio-ingressgateway");
    assert_eq!(
        (hpa["spec"]["minReplicas"].clone(), hpa["spec"]["maxReplicas"].clone()),
        (json!(3), json!(10))
    );
    let svc = find(&objects, "Service", "istio-internal-gateway");
    assert_eq!(
        svc["spec"]["selector"]["istio"], "internal-gateway",
        "the label the operator file asked for"
    );
    assert_eq!(
        find(&objects, "Service", "istio-ingressgateway")["spec"]["ports"][1]["nodePort"],
        30080
    );
}

#[test]
fn a_sail_istio_with_a_revision_becomes_that_revisions_mesh_install() {
    let c = convert(&[file("sail-istio.yaml")], &[]).unwrap();
    assert_eq!(lines(&c), Vec::<String>::new());
    let spec = &c.mesh_install.spec;
    assert_eq!(c.mesh_install.metadata.name.as_deref(), Some("canary"));
    assert_eq!((spec.revision.as_str(), spec.version.as_str()), ("canary", "1.28.0"));
    assert!(spec.gateways.is_empty(), "Sail installs no gateways");
    assert!(spec.proxy.hold_application_until_proxy_starts);
    assert_eq!(spec.proxy.resources.requests["cpu"].0, "50m");
    assert_eq!(spec.control_plane.replicas, 2);
    assert_eq!(spec.control_plane.autoscale, None);
    assert_eq!(spec.injection.never_inject_selector.len(), 1);
    let proxy_metadata = &spec.mesh_config.default_config.as_ref().unwrap().proxy_metadata;
    assert_eq!(proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");

    let (_, objects) = printed(&c);
    let istiod = find(&objects, "Deployment", "istiod-canary");
    assert_eq!(istiod["spec"]["replicas"], 2);
    assert_eq!(env(istiod, "PILOT_ENABLE_STATUS").as_deref(), Some("true"));
    let mesh = rendered_mesh(&objects, "istio-canary");
    assert_eq!(mesh["outboundTrafficPolicy"]["mode"], "REGISTRY_ONLY");
    assert_eq!(
        mesh["defaultConfig"]["discoveryAddress"],
        "istiod-canary.istio-system.svc:15012"
    );
    let mwc = find(
        &objects,
        "MutatingWebhookConfiguration",
        "mizzen-sidecar-injector-canary",
    );
    assert_eq!(mwc["webhooks"][0]["clientConfig"]["service"]["path"], "/inject/canary");
}

#[test]
fn a_revision_based_sail_istio_names_its_revision_after_the_version() {
    let sail = "apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\n\
                spec: {version: v1.28.0, namespace: mesh, profile: demo, updateStrategy: {type: RevisionBased, inactiveRevisionDeletionGracePeriodSeconds: 60}}\n";
    let c = convert(&[inline("sail.yaml", sail)], &[]).unwrap();
    let spec = &c.mesh_install.spec;
    assert_eq!(c.mesh_install.metadata.name.as_deref(), Some("default"));
    assert_eq!(
        (spec.revision.as_str(), spec.namespace.as_str()),
        ("default-v1-28-0", "mesh")
    );
    assert!(
        spec.gateways.is_empty(),
        "the demo profile's gateways are not Sail's to install"
    );
    assert_eq!(spec.control_plane.env["PILOT_TRACE_SAMPLING"], "100");
    let reported: Vec<&str> = c.unsupported.iter().map(|u| u.setting.as_str()).collect();
    assert_eq!(
        reported,
        [
            "updateStrategy.type",
            "updateStrategy.inactiveRevisionDeletionGracePeriodSeconds"
        ]
    );
    printed(&c);
    // The default name with in-place updates is the default revision.
    let c = convert(
        &[inline(
            "sail.yaml",
            "apiVersion: sailoperator.io/v1\nkind: Istio\nmetadata: {name: default}\n",
        )],
        &[],
    )
    .unwrap();
    assert_eq!(c.mesh_install.spec.revision, "");
    assert_eq!(
        c.mesh_install.spec.control_plane.autoscale.map(|a| (a.min, a.max)),
        Some((1, 5))
    );
}

#[test]
fn flags_and_files_merge_in_istioctls_order_and_only_real_differences_are_reported() {
    let overlay = inline(
        "overlay.yaml",
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: minimal\n  values:\n    global:\n      proxy:\n        logLevel: debug\n",
    );
    let sets: Vec<String> = [
        // --set wins over the file; the profile comes from the last --set.
        "values.global.proxy.logLevel=error",
        "profile=default",
        "components.ingressGateways[name:istio-ingressgateway].k8s.service.type=NodePort",
        "values.gateways.istio-ingressgateway.ports[1].nodePort=30080",
        "values.pilot.env.ENABLE_NATIVE_SIDECARS=false",
        // Istio's defaults and empty values change nothing: not reported.
        "values.global.logAsJson=false",
        "values.global.proxy.clusterDomain=cluster.local",
        "values.pilot.keepaliveMaxServerConnectionAge=30m",
        "values.global.network=",
        // A disabled component's settings are moot, as in Istio.
        "values.gateways.istio-egressgateway.type=NodePort",
        // Real differences are named.
        "values.global.proxy.tracer=zipkin",
        "values.global.proxy.readinessPeriodSeconds=30",
        "values.pilot.nodeSelector.disk=ssd",
        "components.cni.enabled=true",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let c = convert(&[overlay], &sets).unwrap();
    let spec = &c.mesh_install.spec;
    assert_eq!(spec.proxy.log_level, "error");
    assert_eq!(spec.proxy.native_sidecar, NativeSidecarMode::Off);
    assert!(!spec.control_plane.env.contains_key("ENABLE_NATIVE_SIDECARS"));
    assert_eq!(
        spec.gateways.len(),
        1,
        "the default profile's ingress gateway, and no egress gateway"
    );
    assert_eq!(spec.gateways[0].service_type(), ServiceType::NodePort);
    let http2 = &spec.gateways[0].service.ports[1];
    assert_eq!((http2.name.as_str(), http2.node_port), ("http2", Some(30080)));
    // Components first, then the values in key order.
    assert_eq!(
        lines(&c),
        [
            "components.cni.enabled=true: MeshInstall does not install the cni component",
            "values.global.proxy.readinessPeriodSeconds=30: read by sidecar injection, but MeshInstall has no field for it",
            "values.global.proxy.tracer=zipkin: no MeshInstall equivalent",
            "values.pilot.nodeSelector.disk=ssd: no MeshInstall equivalent",
        ]
    );
    printed(&c);
}

#[test]
fn settings_from_the_profile_say_so() {
    let c = istioctl("istioctl install --set profile=empty --set components.ingressGateways[0].enabled=true").unwrap();
    assert_eq!(
        lines(&c),
        [
            "components.pilot.enabled=false (profile empty): MeshInstall always runs istiod",
            "components.base.enabled=false (profile empty): MeshInstall always installs Istio's CRDs (base)",
        ]
    );
    assert_eq!(c.mesh_install.spec.gateways.len(), 1);
    printed(&c);
}

#[test]
fn settings_the_mesh_install_cannot_carry_are_named_with_the_reason() {
    let c = istioctl(
        "istioctl install --set values.pilot.autoscaleEnabled=false \
         --set components.pilot.k8s.hpaSpec.maxReplicas=9 \
         --set components.ingressGateways[name:istio-ingressgateway].name=edge \
         --set values.global.imagePullSecrets[0]=regcred \
         --set values.global.proxy.image=registry.example.com/proxy:1.28.0 \
         --set values.pilot.image=registry.example.com/pilot:1.28.0",
    )
    .unwrap();
    let got = lines(&c);
    let expect = [
        "components.pilot.k8s.hpaSpec={\"maxReplicas\":9}: has no effect, as with istioctl: autoscaling is off",
        "values.pilot.image=registry.example.com/pilot:1.28.0: MeshInstall runs docker.io/istio/pilot:1.28.0",
        "components.ingressGateways[name:edge]={\"istio\":\"ingressgateway\"}: Istio \
         labels this gateway's pods with these; mizzen labels them app=edge, istio=edge",
        "values.global.imagePullSecrets=[\"regcred\"]: applied to injected proxies only",
        "values.global.proxy.image=registry.example.com/proxy:1.28.0: MeshInstall runs istio-init from the proxy image",
    ];
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for e in expect {
        assert!(
            got.iter().any(|g| g.starts_with(e)),
            "no line starting {e:?} in {got:#?}"
        );
    }
    // Carried nonetheless where the MeshInstall can: the secret and the image reach injected pods.
    assert_eq!(c.mesh_install.spec.proxy.image_pull_secrets, ["regcred"]);
    assert_eq!(c.mesh_install.spec.proxy.image, "registry.example.com/proxy:1.28.0");
    printed(&c);
}

fn error(sources: &[Source], sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
    match convert(sources, &sets) {
        Ok(c) => panic!("expected an error, got {:?}", c.to_yaml()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_input_is_refused_with_an_error_naming_it() {
    let iop = |spec: &str| {
        inline(
            "iop.yaml",
            &format!("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {spec}\n"),
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            error(&[iop("{profile: ambient}")], &[]),
            "profile \"ambient\" is not one mizzenctl convert knows",
        ),
        (error(&[], &["profile=openshift"]), "profile \"openshift\""),
        (
            error(&[], &["values.global.proxy.logLevel"]),
            "--set \"values.global.proxy.logLevel\": expected path=value",
        ),
        (
            error(&[], &["components.ingressGateways[name].enabled=true"]),
            "not a list selector",
        ),
        (
            error(&[], &["components.ingressGateways[name:nope].enabled=true"]),
            "has no element with name: nope",
        ),
        (
            error(&[], &["values.pilot.autoscaleEnabled=maybe"]),
            "values.pilot.autoscaleEnabled: expected true or false",
        ),
        (
            error(&[], &["values.global.proxy.logLevel=loud"]),
            "values.global.proxy.logLevel: \"loud\" is not one of",
        ),
        (
            error(&[], &["values.gateways.istio-ingressgateway.type=ExternalName"]),
            "values.gateways.istio-ingressgateway.type",
        ),
        (
            error(&[], &["meshConfig.accessLogEncoding=YAML"]),
            "meshConfig: unknown variant `YAML`",
        ),
        (
            error(&[], &["revision=Canary_1"]),
            "revision: \"Canary_1\" is not a DNS label",
        ),
        (
            error(&[], &["values.gateways.istio-ingressgateway.ports[1].nodePort=80"]),
            "values.gateways.istio-ingressgateway.ports[1].nodePort: 80 is outside 30000 to 32767",
        ),
        (
            error(
                &[],
                &["values.gateways.istio-ingressgateway.ports[0].name=status-port-of-the-gateway"],
            ),
            "values.gateways.istio-ingressgateway.ports[0].name",
        ),
        (
            error(
                &[],
                &[
                    "values.gateways.istio-ingressgateway.type=ClusterIP",
                    "values.gateways.istio-ingressgateway.ports[1].nodePort=30080",
                ],
            ),
            "has a nodePort but the Service type is ClusterIP",
        ),
        (
            error(
                &[inline(
                    "deploy.yaml",
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
                )],
                &[],
            ),
            "deploy.yaml: apps/v1 Deployment is not an IstioOperator",
        ),
        (
            error(
                &[inline(
                    "mi.yaml",
                    "apiVersion: mizzen.io/v1alpha1\nkind: MeshInstall\nmetadata: {name: x}\n",
                )],
                &[],
            ),
            "mi.yaml: mizzen.io/v1alpha1 MeshInstall is not an IstioOperator",
        ),
        (
            error(&[inline("list.yaml", "- a\n- b\n")], &[]),
            "list.yaml: not a Kubernetes resource",
        ),
        (
            error(&[inline("bad.yaml", "spec: [unclosed\n")], &[]),
            "bad.yaml: invalid YAML",
        ),
        (
            error(&[inline("empty.yaml", "")], &[]),
            "empty.yaml: no resource in the file",
        ),
        (
            error(
                &[
                    iop("{}"),
                    inline(
                        "two.yaml",
                        "kind: IstioOperator\napiVersion: install.istio.io/v1alpha1\n---\nkind: IstioOperator\napiVersion: install.istio.io/v1alpha1\n",
                    ),
                ],
                &[],
            ),
            "two.yaml: 2 resources in one file",
        ),
        (
            error(
                &[inline("sail.yaml", "apiVersion: sailoperator.io/v1\nkind: Istio\n")],
                &["values.pilot.replicaCount=2"],
            ),
            "sail.yaml: --set flags apply to istioctl and IstioOperator inputs",
        ),
        (error(&[], &[]), "nothing to convert"),
    ];
    for (got, want) in cases {
        assert!(got.contains(want), "error {got:?} should contain {want:?}");
    }
}

#[test]
fn malformed_trees_are_errors_not_panics() {
    let iop = |spec: &str| {
        inline(
            "iop.yaml",
            &format!("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {spec}\n"),
        )
    };
    for spec in [
        "[1, 2]",
        "{values: 5}",
        "{values: {pilot: 5}}",
        "{values: {pilot: {env: [1]}}}",
        "{values: {gateways: {istio-ingressgateway: {ports: 5}}}}",
        "{values: {gateways: {istio-ingressgateway: {ports: [5]}}}}",
        "{values: {gateways: {istio-ingressgateway: {ports: [{port: 80}]}}}}",
        "{values: {global: {proxy: {resources: {requests: {cpu: lots}}}}}}",
        "{components: {ingressGateways: {name: x}}}",
        "{components: {ingressGateways: [{name: x, k8s: {hpaSpec: [1]}}]}}",
        "{components: {ingressGateways: [{name: x, k8s: {hpaSpec: {minReplicas: 0}}}]}}",
        "{components: {ingressGateways: [{name: Bad_Name}]}}",
        "{components: {ingressGateways: [{name: a}, {name: a}]}}",
        "{components: {pilot: {k8s: {env: {A: b}}}}}",
        "{meshConfig: [1]}",
        "{components: 5}",
        "{components: {cni: 5}}",
        "{components: {pilot: {k8s: [1]}}}",
        "{components: {ingressGateways: [{name: x, label: 5}]}}",
        "{components: {ingressGateways: [{name: x, k8s: {service: 5}}]}}",
        "{values: {gateways: {istio-ingressgateway: 5}}}",
        "{values: {sidecarInjectorWebhook: {neverInjectSelector: 5}}}",
    ] {
        let result = convert(&[iop(spec)], &[]);
        assert!(
            result.is_err(),
            "spec {spec} should be refused, got {:?}",
            result.map(|c| c.to_yaml())
        );
    }
    // A scalar where Istio expects a map of values is reported, never dropped.
    let c = convert(&[iop("{values: {global: {proxy: 5}}}")], &[]).unwrap();
    assert_eq!(lines(&c), ["values.global.proxy=5: no MeshInstall equivalent"]);
    // Type clashes in --set paths are errors too.
    let err = error(&[iop("{values: {pilot: 5}}")], &["values.pilot.env.A=1"]);
    assert!(err.contains("values.pilot is not a map"), "{err}");
}

fn mizzenctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mizzenctl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn the_binary_prints_the_mesh_install_on_stdout_and_each_unconverted_setting_on_stderr() {
    let mut args = vec!["convert", "--"];
    let seed = words(SEED);
    args.extend(seed.iter().map(String::as_str));
    let (code, stdout, stderr) = mizzenctl(&args);
    assert_eq!((code, stderr.as_str()), (0, ""), "{stdout}");
    let c = istioctl(SEED).unwrap();
    assert_eq!(stdout, c.to_yaml().unwrap());

    // Files named on the istioctl command line are read, relative to the working directory.
    let (code, stdout, stderr) = mizzenctl(&[
        "convert",
        "--",
        "istioctl",
        "install",
        "-f",
        "tests/convert/two-gateways.yaml",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("name: istio-internal-gateway"), "{stdout}");
    assert_eq!(
        stderr,
        "mizzenctl convert: not converted: components.ingressGateways[name:istio-internal-gateway].k8s.nodeSelector=\
         {\"node-role.kubernetes.io/edge\":\"\"}: no MeshInstall equivalent\n"
    );

    // --strict: the same lines, then a failure and no MeshInstall.
    let (code, stdout, stderr) = mizzenctl(&["convert", "--strict", "-f", "tests/convert/two-gateways.yaml"]);
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("k8s.nodeSelector") && stderr.contains("--strict: 1 setting(s)"),
        "{stderr}"
    );
    let (code, _, _) = mizzenctl(&["convert", "--strict", "-f", "tests/convert/sail-istio.yaml"]);
    assert_eq!(code, 0, "nothing to report, nothing to fail");

    let (code, stdout, stderr) = mizzenctl(&["convert", "-f", "tests/convert/missing.yaml"]);
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(stderr.contains("tests/convert/missing.yaml"), "{stderr}");
}

#[test]
fn revision_tags_of_the_istiod_chart_become_spec_revision_tags() {
    let c =
        istioctl("istioctl install -r canary --set values.revisionTags[0]=prod --set values.revisionTags[1]=default")
            .unwrap();
    assert_eq!(c.mesh_install.spec.revision, "canary");
    assert_eq!(c.mesh_install.spec.revision_tags, vec!["prod", "default"]);
    assert_eq!(lines(&c), Vec::<String>::new());
    let (yaml, _) = printed(&c);
    assert!(yaml.contains("revisionTags:"), "{yaml}");
    let err = istioctl("istioctl install --set values.revisionTags[0]=Prod_1").unwrap_err();
    assert!(
        err.to_string().contains("values.revisionTags") && err.to_string().contains("Prod_1"),
        "{err}"
    );
    let err = istioctl("istioctl install -r canary --set values.revisionTags[0]=canary").unwrap_err();
    assert!(err.to_string().contains("spec.revisionTags"), "{err}");
}

#[test]
fn istio_chart_defaults_from_an_installed_state_dump_are_silent() {
    let c = istioctl(
        "istioctl install --set values.global.proxy.tracer=none --set values.istiodRemote.enabled=false \
         --set values.pilot.cni.provider=default --set values.pilot.taint.name=cni.istio.io/not-ready \
         --set values.global.waypoint.resources.requests.cpu=100m",
    )
    .unwrap();
    assert_eq!(lines(&c), Vec::<String>::new());
}
