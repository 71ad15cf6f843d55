//! spearlet's configuration: one serde tree with documented defaults.
//!
//! Every field has a default, so an empty file (or none) is a working
//! configuration; unknown keys are refused so a typo is not silently ignored.

mod allowed_hosts;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

pub(crate) use allowed_hosts::host_and_port;
pub use allowed_hosts::AllowedHosts;
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

/// The Prometheus / OpenMetrics endpoint (`GET /metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `/metrics` on. Default: none (not served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Tasks that get a `task` label of their own (the oldest); the rest
    /// are added up under `task="_other"`. Default: 1000.
    pub max_task_labels: usize,
    /// A bearer token scrapers must send (`authorization: Bearer TOKEN`).
    /// Without one, anyone who reaches `listen` reads the task names; the
    /// server warns at start when `listen` is not a loopback address.
    /// Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            max_task_labels: 1000,
            token: None,
        }
    }
}

/// Tasks kept across restarts (in `<data_dir>/state.redb`), and how one
/// switches version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Load every recorded task's plugin when the server starts, instead of
    /// on each task's first use. Default: `false`.
    pub preload: bool,
    /// How long an upgrade or rollback waits for calls still running on the
    /// old version when the request does not say. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The longest drain a request may ask for. Default: 10 min.
    #[serde(with = "humantime_serde")]
    pub max_drain_timeout: Duration,
    /// The write-ahead journal's size at most while it cannot be folded into
    /// the database (a full disk, a broken database): past it, task
    /// creation and ASYNC acceptance are refused (UNAVAILABLE) until
    /// persistence recovers, instead of the journal growing without bound.
    /// Default: 64 MiB.
    pub max_journal_bytes: u64,
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            preload: false,
            drain_timeout: Duration::from_secs(30),
            max_drain_timeout: Duration::from_secs(600),
            max_journal_bytes: 64 * 1024 * 1024,
        }
    }
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

/// Joining a SPEAR cluster: with `grpc` set, spearlet registers itself as a
/// node of the SMS (SPEAR's metadata server), registers the tasks it
/// creates there, and looks up there the task ids it does not know. See
/// `docs/cluster.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// The SMS's gRPC address, `http://HOST:PORT`. Default: none (no cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Url>,
    /// The SMS's HTTP address, for its file API: `smsfile://ID` artifacts are
    /// fetched there and local artifacts of registered tasks are published
    /// there. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<Url>,
    /// How often the node's heartbeat is sent. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// `HOST:PORT` other nodes and clients reach this spearlet at.
    /// Default: the listen address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Time allowed for one call to the SMS. Default: 5 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a task id the SMS does not know is remembered as unknown:
    /// calls naming it within that time are answered NOT_FOUND without
    /// asking the SMS again. `0` turns the cache off. Default: 10 s.
    #[serde(with = "humantime_serde")]
    pub unknown_task_ttl: Duration,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            grpc: None,
            http: None,
            heartbeat_interval: Duration::from_secs(10),
            advertise: None,
            request_timeout: Duration::from_secs(5),
            unknown_task_ttl: Duration::from_secs(10),
        }
    }
}

/// TLS for the gRPC server (rustls). Without `cert` and `key`, plain
/// HTTP/2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// A CA (PEM) whose certificates clients must present: mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// Who may call. Without a tokens file, anyone who can reach the address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A file of bearer tokens, one per line (blank lines and `#` comments
    /// ignored). When set, every RPC but `grpc.health.v1` needs
    /// `authorization: Bearer TOKEN` with one of them. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
}

/// Bounds on what one request may carry. A request past one is refused
/// (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for message size) with the
/// limit's key in the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Task name, bytes. Default: 256.
    pub max_name_bytes: usize,
    /// Task description, bytes. Default: 4096.
    pub max_description_bytes: usize,
    /// Task, execution and artifact ids, bytes. Default: 128.
    pub max_id_bytes: usize,
    /// Function name and parameter names, bytes. Default: 256.
    pub max_function_name_bytes: usize,
    /// Parameters per call. Default: 256.
    pub max_parameters: usize,
    /// All parameter values of a call together, bytes. Default: 4 MiB.
    pub max_parameter_bytes: usize,
    /// Invocation metadata and artifact metadata entries, each. Default: 64.
    pub max_metadata_entries: usize,
    /// Environment variables and headers of a call, each. Default: 256.
    pub max_environment_entries: usize,
    /// A gRPC message, decoded or encoded, bytes. Default: 16 MiB.
    pub max_message_bytes: usize,
    /// Concurrent streams (calls) per HTTP/2 connection. Default: 1024.
    pub max_concurrent_streams: u32,
    /// Retries one call may ask for (`context.max_retries`). Default: 10.
    pub max_retries: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_name_bytes: 256,
            max_description_bytes: 4096,
            max_id_bytes: 128,
            max_function_name_bytes: 256,
            max_parameters: 256,
            max_parameter_bytes: 4 * 1024 * 1024,
            max_metadata_entries: 64,
            max_environment_entries: 256,
            max_message_bytes: 16 * 1024 * 1024,
            max_concurrent_streams: 1024,
            max_retries: 10,
        }
    }
}

/// Where plugin code runs (`[tiers]`, formerly `[exec]`): the inline tier
/// and the worker processes of the process tier. SYNC calls of a function whose last
/// `inline_warm_up` runs each took at most `inline_budget` run on the
/// calling thread, with no thread hand-off. Slower runs send the function
/// back off the async workers (doubling the warm-up it needs to return)
/// when they are more than about 1 % of its recent inline runs, or when
/// one run passes the hard limit, twenty budgets (at least 10 ms, at most
/// 10 ms over the budget): a preemption now and then must not demote a
/// short function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TiersConfig {
    /// The longest run that counts as short. `0` turns the inline tier off.
    /// Default: 100 µs.
    #[serde(with = "humantime_serde")]
    pub inline_budget: Duration,
    /// Short runs in a row before a function is promoted. Default: 32.
    pub inline_warm_up: u32,
    /// The tier of tasks whose NEW_TASK does not say (`spearlet.isolation`):
    /// `in-process` (the default) or `process`.
    pub isolation: crate::isolate::Isolation,
    /// The `spearlet` executable that runs worker processes. Default: this
    /// executable when it is `spearlet`, else a `spearlet` beside it or one
    /// directory up (where cargo puts test binaries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_program: Option<std::path::PathBuf>,
    /// Worker processes kept started and idle, ready to load a plugin: a
    /// process-tier task (and the first load of any plugin, which runs in a
    /// worker before the host loads it) then pays no process start. Default: 1.
    pub warm_workers: usize,
    /// Load every plugin first in a worker process, so that a library whose
    /// ELF constructor crashes or hangs is refused instead of taking the
    /// host down. Default: true. (`plugin inspect` and `plugin check` turn
    /// it off in the child process they already load each file in.)
    pub first_load_in_worker: bool,
    /// How long loading a library in a worker may take — its ELF
    /// constructors run then — before it is refused as hanging
    /// (`constructor_crashed`). Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub load_timeout: Duration,
}

impl Default for TiersConfig {
    fn default() -> Self {
        TiersConfig {
            inline_budget: Duration::from_micros(100),
            inline_warm_up: 32,
            isolation: crate::isolate::Isolation::InProcess,
            worker_program: None,
            warm_workers: 1,
            first_load_in_worker: true,
            load_timeout: Duration::from_secs(30),
        }
    }
}

impl TiersConfig {
    /// The inline tier's policy.
    pub(crate) fn tier_policy(&self) -> crate::tier::TierPolicy {
        crate::tier::TierPolicy {
            budget: self.inline_budget,
            warm_up: self.inline_warm_up.max(1),
        }
    }
}

/// The gRPC server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default: `127.0.0.1:50052`.
    pub listen: SocketAddr,
    /// The node's HTTP port: the stream plane SPEAR's gateway connects to
    /// (`/api/v1/executions/{id}/streams/ws`), `/metrics` and `/health`
    /// (`docs/cluster.md`). Default: none, except when joining an SMS
    /// (`sms.grpc`): then the listen address's IP, on a port the system
    /// chooses, which the node registers at the SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// On SIGTERM or SIGINT, how long calls in flight may take to finish
    /// before ASYNC executions still running are cancelled and the server
    /// stops. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            http_listen: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Instance pools (per task; a task's invocation metadata may override
/// `spearlet.pool.min` and `spearlet.pool.max`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Instances created with the task and kept when idle. Default: 1.
    pub min_instances: usize,
    /// Instances (and so concurrent calls) per task at most. Default: 8.
    pub max_instances: usize,
    /// Idle instances above the minimum are destroyed after this. Default: 5 min.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a call without a deadline waits for a free instance before
    /// RESOURCE_EXHAUSTED. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Abandoned calls (timed out or force-cancelled while their plugin runs
    /// on, ignoring cancellation) each pin an instance and a thread. Past
    /// this many in one task, new calls to it are refused
    /// (RESOURCE_EXHAUSTED) until one returns. Default: 8.
    pub max_quarantined: usize,
    /// The same bound across all tasks. Default: 128.
    pub max_quarantined_total: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            min_instances: 1,
            max_instances: 8,
            idle_timeout: Duration::from_secs(300),
            acquire_timeout: Duration::from_secs(30),
            max_quarantined: 8,
            max_quarantined_total: 128,
        }
    }
}

/// Execution records and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// Records kept for status queries and listings. Default: 10000.
    pub max_records: usize,
    /// How long a finished execution's record is kept. Default: 1 h.
    #[serde(with = "humantime_serde")]
    pub record_ttl: Duration,
    /// ASYNC executions accepted but not finished, at most. Default: 1024.
    pub max_pending: usize,
    /// The largest result one record keeps, in bytes: a larger one is
    /// dropped from the record, which says so (the caller waiting for it
    /// still receives it). Default: 1 MiB.
    pub max_result_bytes: usize,
    /// All results kept in records together, in bytes; past it, a new
    /// result is dropped from its record as above. Default: 256 MiB.
    pub max_total_result_bytes: usize,
    /// Whether a SYNC execution whose caller chose no `execution_id` is
    /// kept once it completes. By default it is not: its caller received
    /// everything the record would say, and keeping it would cost every
    /// short call a table insert and an eviction. It is kept when it
    /// fails, times out, is cancelled or logs — what a later look at it
    /// (`spearlet executions --status failed`, `status --logs`) is for.
    /// Counters and metrics count every execution either way. Default:
    /// false.
    pub keep_completed_sync: bool,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            max_records: 10_000,
            record_ttl: Duration::from_secs(3600),
            max_pending: 1024,
            max_result_bytes: 1024 * 1024,
            max_total_result_bytes: 256 * 1024 * 1024,
            keep_completed_sync: false,
        }
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

/// Artifact locations, integrity rules, downloads and the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArtifactConfig {
    /// Directories local artifacts (absolute paths, `file://`) may come from,
    /// checked after resolving `..` and symlinks. Default: none, so local
    /// artifacts are refused until a root is configured.
    pub roots: Vec<PathBuf>,
    /// Refuse local artifacts that come without a checksum. Default: `false`
    /// (the file is hashed and its digest recorded). Remote artifacts always
    /// need one.
    pub require_local_checksum: bool,
    /// The largest artifact accepted, in bytes. Default: 256 MiB.
    pub max_size_bytes: u64,
    /// Size bound of the download cache, in bytes; least recently used
    /// artifacts no task uses are removed beyond it. Default: 2 GiB.
    pub cache_max_bytes: u64,
    /// Download attempts in all (connect errors and 5xx are retried, 4xx
    /// not). Default: 4.
    pub download_attempts: u32,
    /// Delay before the first retry; it doubles per attempt, with full
    /// jitter, capped at 10 s. Default: 200 ms.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    /// Time allowed for one download attempt. Default: 60 s.
    #[serde(with = "humantime_serde")]
    pub download_timeout: Duration,
    /// Hosts http(s) artifacts may be fetched from: exact host names or
    /// addresses, or `*.example.com` for its subdomains, each optionally
    /// with `:PORT`. A location on any other host is refused before any
    /// connection (PERMISSION_DENIED). The configured SMS (`sms.http`) is
    /// always allowed for `smsfile://` artifacts. Default: none (no remote
    /// fetch).
    pub allowed_hosts: Vec<String>,
    /// Loaded plugins no task uses any more that stay mapped (their file
    /// open), so a task created again on one loads nothing; the least
    /// recently used beyond this are unmapped and closed. Default: 16.
    pub max_unused_loaded: usize,
    /// The old name of `sms.http`, still read (see [`Config::normalized`]).
    #[serde(skip_serializing)]
    pub sms_http: Option<Url>,
}

impl Default for ArtifactConfig {
    fn default() -> Self {
        ArtifactConfig {
            roots: Vec::new(),
            require_local_checksum: false,
            max_size_bytes: 256 * 1024 * 1024,
            cache_max_bytes: 2 * 1024 * 1024 * 1024,
            download_attempts: 4,
            retry_base_delay: Duration::from_millis(200),
            download_timeout: Duration::from_secs(60),
            allowed_hosts: Vec::new(),
            max_unused_loaded: 16,
            sms_http: None,
        }
    }
}

#[cfg(test)]
mod tests {
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
