//! mizzenctl: mizzen's library, offline, from the command line.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mizzen::api::NativeSidecarMode;
use mizzen::cli::{CliError, check_inject, checks_table, mesh_install_from_yaml, parse_labels};
use mizzen::convert;
use mizzen::inject::InjectionConfig;

/// mizzen's command line: the same code the operator and webhook run, without a cluster.
#[derive(Parser, Debug)]
#[command(name = "mizzenctl", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inject the istio-proxy sidecar into the pod templates of Kubernetes manifests.
    ///
    /// Handles Pod, Deployment, ReplicaSet, ReplicationController, DaemonSet, StatefulSet, Job, CronJob,
    /// DeploymentConfig and List; every other document is printed unchanged. The output is ready for
    /// `kubectl apply -f -`. Pods that are not injected (hostNetwork, opted out, system namespace) are printed
    /// unchanged and the reason goes to stderr.
    ///
    /// Example: mizzenctl kube-inject --meshinstall config/samples/meshinstall.yaml -f deployment.yaml | kubectl apply -f -
    KubeInject {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        settings: Settings,
    },
    /// Explain, for every pod template, whether it gets the sidecar and which rule decided.
    ///
    /// Stage 1 is the MutatingWebhookConfiguration (does the API server send the pod to this revision's webhook,
    /// from the namespace and pod labels); stage 2 is the injector's own decision (hostNetwork, system namespaces,
    /// the sidecar.istio.io/inject label or annotation, selectors, policy).
    CheckInject {
        #[command(flatten)]
        input: Input,
        #[command(flatten)]
        settings: Settings,
        /// Labels of the namespace the pods are created in, such as istio-injection=enabled.
        #[arg(long, value_name = "K=V,...", default_value = "")]
        namespace_labels: String,
        /// Namespace assumed for documents that do not set metadata.namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Print every object the operator would apply for a MeshInstall (Istio CRDs, istiod, gateways, the webhook
    /// configuration), as a multi-document YAML. The TLS Secret and the caBundle are the operator's and not shown.
    Render {
        #[command(flatten)]
        input: Input,
        /// Namespace of the mizzen webhook Service the MutatingWebhookConfiguration points at.
        #[arg(long, default_value = "mizzen-system")]
        operator_namespace: String,
        /// Point the MutatingWebhookConfiguration at this URL instead (webhook running outside the cluster).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    /// Print the MeshInstall that means what an istioctl command line, an IstioOperator or a Sail Istio means.
    ///
    /// Inputs merge as istioctl merges them: the profile, then every -f file in order, then every --set in order.
    /// Every setting with no MeshInstall equivalent is named on stderr, one per line (settings equal to what the
    /// MeshInstall does anyway are not). The output is ready for `kubectl apply -f -`.
    ///
    /// Examples:
    ///   mizzenctl convert -- istioctl install --set profile=demo --set meshConfig.accessLogEncoding=JSON
    ///   mizzenctl convert -f istio-operator.yaml --strict
    ///   mizzenctl convert -f sail-istio.yaml
    #[command(verbatim_doc_comment)]
    Convert {
        /// IstioOperator (install.istio.io/v1alpha1) or Sail Istio (sailoperator.io/v1) file; - for standard input.
        /// Repeatable for IstioOperators, merged in order.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        files: Vec<String>,
        /// An istioctl setting such as values.global.proxy.holdApplicationUntilProxyStarts=true (repeatable).
        #[arg(short = 's', long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Fail (and print no MeshInstall) when any setting has no MeshInstall equivalent.
        #[arg(long)]
        strict: bool,
        /// An istioctl command line after `--`, such as: istioctl install --set profile=demo -f overlay.yaml
        #[arg(last = true, value_name = "ISTIOCTL COMMAND")]
        istioctl: Vec<String>,
    },
    /// Print the MeshInstall CustomResourceDefinition (YAML), as generated from the Rust types.
    ///
    /// `config/crd/mizzen.io_meshinstalls.yaml` is this output; regenerate it with `hack/generate.sh`.
    Crd,
    /// Print Istio's CRDs as mizzen installs them, generated from Istio's `istio-crd-all.gen.yaml`.
    ///
    /// `src/istio_crds.gen.json` is this output; regenerate it with `hack/generate.sh`.
    IstioCrds {
        /// Istio's generated CRD file (manifests/charts/base/files/crd-all.gen.yaml of the Istio release).
        #[arg(long, value_name = "FILE")]
        reference: String,
    },
    /// Print the whole install bundle (namespace, CRD, RBAC, operator and webhook) as one multi-document YAML.
    ///
    /// `config/bundle.yaml` is this output: `kubectl apply -f config/bundle.yaml` installs mizzen.
    Bundle,
    /// Print the operator's RBAC grants: the rules of every role mizzen renders (`config/rbac/operator-grants.yaml`).
    Rbac,
    /// Show, from a cluster, which injected pods run the proxy of the MeshInstall that serves them now.
    ///
    /// Reads the MeshInstalls, the namespaces' labels and the injected pods through a kubeconfig (--kubeconfig,
    /// else $KUBECONFIG or ~/.kube/config, else the in-cluster service account), and prints each MeshInstall with its
    /// revision, tags, proxy image and proxies up to date, then every workload with injected pods, sorted by
    /// namespace, with the MeshInstall serving it and what is outdated. The same report as the MeshInstall status
    /// (`status.dataPlane`, the PROXIES column).
    #[cfg(feature = "cluster")]
    ProxyStatus {
        /// Kubeconfig file.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<std::path::PathBuf>,
        /// Only the workloads of this namespace.
        #[arg(short, long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
}

#[derive(Args, Debug)]
struct Input {
    /// Manifest file to read, or - for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: String,
}

#[derive(Args, Debug)]
struct Settings {
    /// Take the injection settings from this MeshInstall (YAML), as the webhook would.
    #[arg(long, value_name = "FILE")]
    meshinstall: Option<String>,
    /// Image registry (overrides the MeshInstall's spec.hub).
    #[arg(long)]
    hub: Option<String>,
    /// Istio version / image tag (overrides spec.version).
    #[arg(long)]
    tag: Option<String>,
    /// Control-plane revision (overrides spec.revision).
    #[arg(long)]
    revision: Option<String>,
    /// Native sidecars: auto (every listed kubelet 1.33 or newer; on when none is listed), true or false.
    #[arg(long, value_enum)]
    native_sidecar: Option<NativeArg>,
    /// Kubelet version of a cluster node, for --native-sidecar auto (repeatable), such as v1.32.4.
    #[arg(long, value_name = "VERSION")]
    kubelet_version: Vec<String>,
    /// Hold application containers until the proxy is ready.
    #[arg(long)]
    hold_application_until_proxy_starts: Option<bool>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum NativeArg {
    Auto,
    True,
    False,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

fn read_file(path: &str) -> Result<String, CliError> {
    read_input(&Input { file: path.to_owned() })
}

fn read_input(input: &Input) -> Result<String, CliError> {
    if input.file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError(format!("reading standard input: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(&input.file).map_err(|e| CliError(format!("{}: {e}", input.file)))
    }
}

fn config(settings: &Settings) -> Result<InjectionConfig, CliError> {
    let mut config = match &settings.meshinstall {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| CliError(format!("{path}: {e}")))?;
            InjectionConfig::from_mesh_install(&mesh_install_from_yaml(path, &text)?.spec)
        }
        None => InjectionConfig::default(),
    };
    if let Some(hub) = &settings.hub {
        config.hub = hub.clone();
    }
    if let Some(tag) = &settings.tag {
        config.tag = tag.clone();
    }
    if let Some(rev) = &settings.revision {
        config.revision = if rev == "default" { String::new() } else { rev.clone() };
    }
    if let Some(native) = settings.native_sidecar {
        config.native_sidecar = match native {
            NativeArg::Auto => NativeSidecarMode::Auto,
            NativeArg::True => NativeSidecarMode::On,
            NativeArg::False => NativeSidecarMode::Off,
        };
    }
    if !settings.kubelet_version.is_empty() {
        for v in &settings.kubelet_version {
            if mizzen::inject::config::kubelet_minor(v).is_none() {
                return Err(CliError(format!(
                    "--kubelet-version: {v:?} is not a Kubernetes version such as v1.33.0"
                )));
            }
        }
        config.node_kubelet_versions = settings.kubelet_version.clone();
    }
    if let Some(hold) = settings.hold_application_until_proxy_starts {
        config.proxy.hold_application_until_proxy_starts = hold;
    }
    Ok(config)
}

/// Lists what `proxy-status` reports on from the cluster.
#[cfg(feature = "cluster")]
async fn proxy_status(
    kubeconfig: Option<std::path::PathBuf>,
    namespace: Option<String>,
    output: Format,
) -> Result<String, CliError> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ListParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use mizzen::MeshInstall;

    let config = match &kubeconfig {
        Some(path) => {
            let file =
                Kubeconfig::read_from(path).map_err(|e| CliError(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|e| CliError(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            CliError(format!(
                "no cluster configuration (set --kubeconfig or KUBECONFIG): {e}"
            ))
        })?,
    };
    let client = kube::Client::try_from(config).map_err(|e| CliError(format!("Kubernetes client: {e}")))?;
    let meshes = Api::<MeshInstall>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError(format!("listing MeshInstalls: {e}")))?
        .items;
    let namespaces = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| CliError(format!("listing namespaces: {e}")))?
        .items
        .into_iter()
        .map(|ns| {
            (
                ns.metadata.name.clone().unwrap_or_default(),
                ns.metadata.labels.unwrap_or_default(),
            )
        })
        .collect();
    // Where new pods go: mizzen's live webhook configurations, as the operator's report routes them. Without the
    // right to list them, by who should hold each name, with a note.
    let selector = format!("app.kubernetes.io/managed-by={}", mizzen::render::MANAGED_BY);
    let configs = match Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list_metadata(&ListParams::default().labels(&selector))
        .await
    {
        Ok(list) => Some(list.items),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            eprintln!(
                "note: cannot list MutatingWebhookConfigurations ({}); pods are counted for the MeshInstall that \
                 should hold their name, which a paused holder or a configuration not yet live can make differ from \
                 the operator's report",
                e.message
            );
            None
        }
        Err(e) => return Err(CliError(format!("listing MutatingWebhookConfigurations: {e}"))),
    };
    let pods_api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let pods: Vec<_> = pods_api
        .list(&ListParams::default().labels(mizzen::dataplane::INJECTED_POD_LABEL))
        .await
        .map_err(|e| CliError(format!("listing pods: {e}")))?
        .items
        .iter()
        .filter_map(mizzen::dataplane::injected_pod)
        .collect();
    // Each install as the webhook serves it (the spec last applied), as the operator reports it.
    let meshes: Vec<MeshInstall> = meshes.into_iter().map(mizzen::revisions::as_served).collect();
    let refs: Vec<&MeshInstall> = meshes.iter().collect();
    let routing = match &configs {
        Some(configs) => mizzen::revisions::routing(configs.iter().map(|c| &c.metadata), &refs),
        None => mizzen::revisions::assign(refs.iter().copied()),
    };
    let rows = mizzen::dataplane::rows(&refs, &routing, &namespaces, &pods);
    match output {
        // The tags as the live configurations route them, like the pods (status.revisionTags says who holds each:
        // the two differ while a paused holder keeps its configurations or a new holder's is not live yet).
        Format::Table => Ok(mizzen::cli::proxy_status_table(&refs, &routing, &rows)),
        Format::Json => {
            let installs: Vec<serde_json::Value> = refs
                .iter()
                .map(|mi| {
                    let name = mi.metadata.name.clone().unwrap_or_default();
                    let mine = rows.iter().filter(|r| r.mesh_install.as_deref() == Some(name.as_str()));
                    let (up, total) = mine.fold((0, 0), |(u, t), r| (u + r.up_to_date, t + r.up_to_date + r.outdated));
                    serde_json::json!({
                        "name": name,
                        "revision": mi.spec.revision_label(),
                        "tags": routing.of(&name).tags,
                        "proxyImage": mi.spec.proxy_image(),
                        "upToDate": up,
                        "total": total,
                        "rollout": mi.spec.data_plane.rollout,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({"meshInstalls": installs, "workloads": rows}))
                .map(|s| s + "\n")
                .map_err(|e| CliError(e.to_string()))
        }
    }
}

fn run(command: Command) -> Result<String, CliError> {
    match command {
        #[cfg(feature = "cluster")]
        Command::ProxyStatus {
            kubeconfig,
            namespace,
            output,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError(format!("starting the runtime: {e}")))?
            .block_on(proxy_status(kubeconfig, namespace, output)),
        Command::Crd => mizzen::bundle::crd_yaml().map_err(|e| CliError(e.to_string())),
        Command::Render {
            input,
            operator_namespace,
            webhook_url,
        } => {
            let text = read_input(&input)?;
            let mi = mesh_install_from_yaml(&input.file, &text)?;
            let options = mizzen::render::RenderOptions {
                operator_namespace,
                webhook_url,
                ca_bundle: None,
                skip_istio_crds: false,
                holdings: None,
            };
            let objects = mizzen::render::render(&mi, &options)
                .map_err(|e| CliError(format!("{}: invalid MeshInstall: {e}", input.file)))?;
            mizzen::yaml::to_yaml_stream(&objects).map_err(|e| CliError(e.to_string()))
        }
        Command::Bundle => mizzen::bundle::bundle_yaml().map_err(|e| CliError(e.to_string())),
        Command::Rbac => mizzen::rbac::operator_grants_yaml().map_err(|e| CliError(e.to_string())),
        Command::IstioCrds { reference } => {
            let text = read_input(&Input { file: reference })?;
            mizzen::istio_crds::from_reference(&text).map_err(|e| CliError(e.to_string()))
        }
        Command::Convert {
            mut files,
            mut sets,
            strict,
            istioctl,
        } => {
            if !istioctl.is_empty() {
                let command = convert::parse_command(&istioctl).map_err(|e| CliError(e.to_string()))?;
                files.extend(command.files);
                sets.extend(command.sets);
            }
            let sources = files
                .iter()
                .map(|f| read_file(f).map(|text| convert::Source { name: f.clone(), text }))
                .collect::<Result<Vec<_>, _>>()?;
            let conversion = convert::convert(&sources, &sets).map_err(|e| CliError(e.to_string()))?;
            for line in &conversion.unsupported {
                eprintln!("mizzenctl convert: not converted: {line}");
            }
            if strict && !conversion.unsupported.is_empty() {
                return Err(CliError(format!(
                    "--strict: {} setting(s) have no MeshInstall equivalent",
                    conversion.unsupported.len()
                )));
            }
            conversion.to_yaml().map_err(|e| CliError(e.to_string()))
        }
        Command::KubeInject { input, settings } => {
            let injector = mizzen::inject::Injector::compile(config(&settings)?);
            let text = read_input(&input)?;
            let out = mizzen::kubeinject::inject_stream(&injector, &text)
                .map_err(|e| CliError(format!("{}: {e}", input.file)))?;
            for s in &out.skipped {
                eprintln!("mizzenctl: {s}");
            }
            Ok(out.text)
        }
        Command::CheckInject {
            input,
            settings,
            namespace_labels,
            namespace,
            output,
        } => {
            let config = config(&settings)?;
            let labels = parse_labels(&namespace_labels)?;
            let text = read_input(&input)?;
            let checks = check_inject(&config, &text, &namespace, &labels)
                .map_err(|e| CliError(format!("{}: {e}", input.file)))?;
            match output {
                Format::Table => Ok(checks_table(&checks, &config)),
                Format::Json => serde_json::to_string_pretty(&checks)
                    .map(|s| s + "\n")
                    .map_err(|e| CliError(e.to_string())),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(text) => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // A reader that stopped early (`| head`) is not an error worth a message; exit as Unix tools do.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
                Err(e) => {
                    eprintln!("mizzenctl: cannot write the output: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(error) => {
            eprintln!("mizzenctl: {error}");
            ExitCode::FAILURE
        }
    }
}
