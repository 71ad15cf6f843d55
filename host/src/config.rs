//! spearlet's configuration: one serde tree with documented defaults.
//!
//! Every field has a default, so an empty file (or none) is a working
//! configuration; unknown keys are refused so a typo is not silently ignored.
//! This file holds the tree's root; each section's settings live in the
//! submodule named after the section, re-exported here.

mod allowed_hosts;
mod artifacts;
mod executions;
mod limits;
mod metrics;
mod pool;
mod server;
mod sms;
mod tasks;
mod tiers;
mod validate;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) use allowed_hosts::host_and_port;
pub use allowed_hosts::AllowedHosts;
pub use artifacts::ArtifactConfig;
pub use executions::ExecutionConfig;
pub use limits::LimitsConfig;
pub use metrics::MetricsConfig;
pub use pool::PoolConfig;
pub use server::{AuthConfig, ServerConfig, TlsConfig};
pub use sms::SmsConfig;
pub use tasks::TasksConfig;
pub use tiers::TiersConfig;
pub use validate::{
    MAX_MESSAGE_BYTES, MAX_POOL_INSTANCES, MAX_QUARANTINED, MAX_RECORDS, MAX_TOTAL_RESULT_BYTES,
    MAX_WARM_WORKERS,
};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where spearlet keeps state, e.g. the artifact cache.
    /// Default: `$XDG_DATA_HOME/spearlet`, else `~/.local/share/spearlet`.
    pub data_dir: PathBuf,
    /// The gRPC server.
    pub server: ServerConfig,
    /// Where plugins may come from and how they are fetched.
    pub artifacts: ArtifactConfig,
    /// Instance pools.
    pub pool: PoolConfig,
    /// Execution records and limits.
    pub executions: ExecutionConfig,
    /// Where plugin code runs: the inline tier and the worker processes
    /// (`[tiers]`; `[exec]`, its earlier name, is read too).
    #[serde(alias = "exec")]
    pub tiers: TiersConfig,
    /// Bounds on what one request may carry.
    pub limits: LimitsConfig,
    /// Who may call.
    pub auth: AuthConfig,
    /// TLS for the gRPC server.
    pub tls: TlsConfig,
    /// Joining a SPEAR cluster through its metadata server.
    pub sms: SmsConfig,
    /// Tasks kept across restarts.
    pub tasks: TasksConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            server: ServerConfig::default(),
            artifacts: ArtifactConfig::default(),
            pool: PoolConfig::default(),
            executions: ExecutionConfig::default(),
            tiers: TiersConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            sms: SmsConfig::default(),
            tasks: TasksConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Config {
    /// The configuration with renamed keys moved to their current place.
    ///
    /// # Errors
    ///
    /// A message naming both keys when an old key and its replacement
    /// disagree.
    pub fn normalized(mut self) -> Result<Config, String> {
        if let Some(old) = self.artifacts.sms_http.take() {
            match &self.sms.http {
                Some(new) if *new != old => {
                    return Err(format!(
                        "artifacts.sms_http ({old}) and sms.http ({new}) disagree: \
                         artifacts.sms_http is the old name of sms.http, keep only sms.http"
                    ))
                }
                _ => {
                    tracing::warn!("artifacts.sms_http is now sms.http; the old key still works");
                    self.sms.http = Some(old);
                }
            }
        }
        self.validate()?;
        Ok(self)
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("spearlet");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/spearlet"),
        None => PathBuf::from(".spearlet"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_empty_file_is_the_default_and_typos_are_refused() {
        let empty: Config = toml::from_str("").unwrap();
        assert_eq!(empty.artifacts, ArtifactConfig::default());
        let parsed: Config = toml::from_str(
            "[artifacts]\nroots = [\"/srv/plugins\"]\nretry_base_delay = \"50ms\"\n",
        )
        .unwrap();
        assert_eq!(parsed.artifacts.roots, [PathBuf::from("/srv/plugins")]);
        assert_eq!(parsed.artifacts.retry_base_delay, Duration::from_millis(50));
        let typo = toml::from_str::<Config>("[artifacts]\nroot = [\"/srv\"]\n").unwrap_err();
        assert!(typo.to_string().contains("unknown field `root`"), "{typo}");
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_key_value_and_limit() {
        Config::default().validate().unwrap();
        let cases = [
            ("[pool]\nmax_instances = 0\n", "pool.max_instances = 0"),
            (
                "[pool]\nmax_instances = 2305843009213693952\n",
                "pool.max_instances = 2305843009213693952 is out of range: 1 to 4096",
            ),
            (
                "[pool]\nmin_instances = 9\nmax_instances = 8\n",
                "pool.min_instances = 9 is out of range: 0 to 8",
            ),
            (
                "[executions]\nmax_result_bytes = 10\nmax_total_result_bytes = 5\n",
                "executions.max_result_bytes = 10",
            ),
            ("[tasks]\ndrain_timeout = \"1h\"\n", "tasks.drain_timeout"),
            (
                "[limits]\nmax_message_bytes = 10\n",
                "limits.max_message_bytes = 10",
            ),
        ];
        for (toml_text, want) in cases {
            let config: Config = toml::from_str(toml_text).unwrap();
            let err = config.normalized().unwrap_err();
            assert!(err.contains(want), "{toml_text}: {err}");
        }
    }

    #[test]
    fn a_file_with_the_old_exec_section_still_loads() {
        let old: Config = toml::from_str(
            "[exec]\ninline_budget = \"250us\"\nisolation = \"process\"\nwarm_workers = 3\n",
        )
        .unwrap();
        let new: Config = toml::from_str(
            "[tiers]\ninline_budget = \"250us\"\nisolation = \"process\"\nwarm_workers = 3\n",
        )
        .unwrap();
        assert_eq!(old, new);
        assert_eq!(old.tiers.inline_budget, Duration::from_micros(250));
        assert_eq!(old.tiers.isolation, crate::isolate::Isolation::Process);
        assert_eq!(old.tiers.warm_workers, 3);
        old.normalized().unwrap();
    }

    #[test]
    fn the_old_sms_http_key_still_works_unless_it_disagrees() {
        let old: Config = toml::from_str("[artifacts]\nsms_http = \"http://sms:8080\"\n").unwrap();
        let old = old.normalized().unwrap();
        assert_eq!(old.sms.http.unwrap().as_str(), "http://sms:8080/");
        assert_eq!(old.artifacts.sms_http, None);
        let both: Config = toml::from_str(
            "[artifacts]\nsms_http = \"http://a:1\"\n[sms]\nhttp = \"http://b:2\"\n",
        )
        .unwrap();
        let err = both.normalized().unwrap_err();
        assert!(
            err.contains("sms.http") && err.contains("artifacts.sms_http"),
            "{err}"
        );
    }
}
