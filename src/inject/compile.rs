//! The injection compiled once per configuration: an [`InjectionConfig`] with everything that does not depend on
//! the pod worked out ahead (the mesh's effective proxy configuration and its `PROXY_CONFIG` text, images, the
//! template pieces a pod without annotations gets), so that per pod only what depends on the pod is computed.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use serde_json::{Map, Value};

use super::config::InjectionConfig;
use super::proxy_config;

/// A compiled injection configuration. Build it once per configuration (the webhook keeps one per revision) and
/// inject any number of pods with it.
#[derive(Debug)]
pub struct Injector {
    config: InjectionConfig,
    /// Istio's ProxyConfig defaults, which `PROXY_CONFIG` is written relative to.
    proxy_defaults: Map<String, Value>,
    /// Defaults < the mesh's `defaultConfig`: the effective proxy configuration of a pod without
    /// `proxy.istio.io/config`.
    mesh_proxy_config: Map<String, Value>,
    /// `PROXY_CONFIG` of such a pod.
    mesh_proxy_config_json: String,
}

impl Injector {
    /// Compiles a configuration.
    pub fn compile(config: InjectionConfig) -> Self {
        let proxy_defaults = proxy_config::defaults(&config.ca_address());
        let mesh_proxy_config = proxy_config::merge(&proxy_defaults, &config.mesh.default_config);
        let mesh_proxy_config_json = proxy_config::to_env_json(&mesh_proxy_config, &proxy_defaults);
        Self {
            config,
            proxy_defaults,
            mesh_proxy_config,
            mesh_proxy_config_json,
        }
    }

    /// The configuration it was compiled from.
    pub fn config(&self) -> &InjectionConfig {
        &self.config
    }

    /// Istio's ProxyConfig defaults.
    pub fn proxy_defaults(&self) -> &Map<String, Value> {
        &self.proxy_defaults
    }

    /// The mesh's effective proxy configuration.
    pub fn mesh_proxy_config(&self) -> &Map<String, Value> {
        &self.mesh_proxy_config
    }

    /// `PROXY_CONFIG` of a pod without `proxy.istio.io/config`.
    pub fn mesh_proxy_config_json(&self) -> &str {
        &self.mesh_proxy_config_json
    }
}

impl From<InjectionConfig> for Injector {
    fn from(config: InjectionConfig) -> Self {
        Self::compile(config)
    }
}
