//! Names of the annotations and labels injection reads and writes.

/// Pod label or annotation: `"true"` / `"false"` opts the pod in or out.
pub const INJECT: &str = "sidecar.istio.io/inject";
/// What was injected (containers, volumes, …), so re-injection can strip it.
pub const STATUS: &str = "sidecar.istio.io/status";
/// The user's own declarations of injected containers, kept for re-injection.
pub const OVERRIDES: &str = "proxy.istio.io/overrides";
/// Per-pod ProxyConfig overrides (YAML or JSON).
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
/// Comma-separated template names.
pub const TEMPLATES: &str = "inject.istio.io/templates";
/// Revision of the control plane (label on namespaces/pods, annotation on injected pods).
pub const REVISION: &str = "istio.io/rev";
/// Namespace label enabling injection for the default revision.
pub const NAMESPACE_INJECTION: &str = "istio-injection";
/// `"true"`/`"false"`: native sidecar for this pod.
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
/// Proxy image override.
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
/// Proxy CPU request.
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
/// Proxy memory request.
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
/// Proxy CPU limit.
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
/// Proxy memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
/// Envoy log level.
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
/// Envoy component log level.
pub const COMPONENT_LOG_LEVEL: &str = "sidecar.istio.io/componentLogLevel";
/// Agent log level.
pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
/// Interception mode.
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
/// Bootstrap override ConfigMap.
pub const BOOTSTRAP_OVERRIDE: &str = "sidecar.istio.io/bootstrapOverride";
/// Extra volumes (JSON map name → volume source).
pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
/// Extra proxy volume mounts (JSON map name → mount).
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
/// Rewrite application HTTP probes through the agent.
pub const REWRITE_APP_HTTP_PROBERS: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
/// Core dumps for the proxy.
pub const ENABLE_CORE_DUMP: &str = "sidecar.istio.io/enableCoreDump";
/// NET_BIND_SERVICE for the proxy.
pub const CAP_NET_BIND_SERVICE: &str = "sidecar.istio.io/capNetBindService";
/// Agent status port.
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
/// Readiness probe initial delay.
pub const READINESS_INITIAL_DELAY: &str = "readiness.status.sidecar.istio.io/initialDelaySeconds";
/// Readiness probe period.
pub const READINESS_PERIOD: &str = "readiness.status.sidecar.istio.io/periodSeconds";
/// Readiness probe failure threshold.
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";
/// Outbound IP ranges captured.
pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
/// Outbound IP ranges not captured.
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
/// Inbound ports captured.
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
/// Inbound ports not captured.
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Outbound ports captured.
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
/// Outbound ports not captured.
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// KubeVirt interfaces.
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
/// Virtual interfaces rerouted to the proxy.
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
/// Interfaces excluded from capture.
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
/// `kubectl logs` default container.
pub const DEFAULT_LOGS_CONTAINER: &str = "kubectl.kubernetes.io/default-logs-container";
/// `kubectl exec` default container.
pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
/// Multus networks.
pub const MULTUS_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// mTLS mode label.
pub const TLS_MODE: &str = "security.istio.io/tlsMode";
/// Canonical service name label.
pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
/// Canonical service revision label.
pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
/// Prometheus scrape annotation.
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
/// Prometheus port annotation.
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
/// Prometheus path annotation.
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
/// Whether the agent merges the application's Prometheus metrics (validated as a Go boolean).
pub const PROMETHEUS_MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
