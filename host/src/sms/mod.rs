//! Joining a SPEAR cluster: spearlet as a client of the SMS, SPEAR's
//! metadata server (`docs/cluster.md` describes the behaviour).
//!
//! - `node`: this process as a node of the cluster — registered when it
//!   starts, a heartbeat every interval, deleted when it stops gracefully;
//! - `tasks`: tasks created here are registered at the SMS, and ids
//!   unknown here are looked up there;
//! - `publish`: a local artifact of a registered task is uploaded once to
//!   the SMS file API, so other nodes can fetch it.
//! - `reports`: executions and instances reported to the SMS's index (the
//!   gateway finds executions there), queued and sent in the background.
//!
//! The SMS's answers are translated into this crate's errors here: an SMS
//! that cannot be reached is [`Error::SmsUnavailable`] (never "not found"),
//! one that refuses a call is [`Error::SmsRefused`].

mod node;
mod publish;
mod reports;
mod tasks;
mod unknown;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tonic::transport::{Channel, Endpoint};
use url::Url;

use crate::config::SmsConfig;
use crate::error::{Error, Result};

pub use crate::error::SmsCall;
pub use node::{Advertised, NodeAgent};
pub use reports::{
    ExecutionReport, InstanceReport, ReportStats, ReportedInstanceStatus, ReportedStatus, Reporter,
    LIVE_INSTANCE_REFRESH, REPORT_QUEUE_CAPACITY,
};
pub use tasks::{
    Executable, PendingRegistration, RemoteTask, TaskRegistration, ALIAS_KEY, ENDPOINT_KEY,
};

/// How this node stands with the SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// The first registration is under way.
    Connecting,
    /// Registered, and the last heartbeat (or registration) was answered.
    Registered,
    /// The last attempt failed; registration or heartbeats are retried.
    Unreachable {
        /// Why the last attempt failed.
        error: String,
    },
    /// The node was deleted from the SMS: the host is stopping.
    Left,
}

impl LinkState {
    /// One word for it: `connecting`, `registered`, `unreachable`, `left`.
    pub fn word(&self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Registered => "registered",
            LinkState::Unreachable { .. } => "unreachable",
            LinkState::Left => "left",
        }
    }
}

/// The link to the SMS at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// Where the SMS is (its gRPC address).
    pub endpoint: String,
    /// This node's uuid.
    pub node_uuid: String,
    /// The state.
    pub state: LinkState,
    /// When the state last changed.
    pub since: SystemTime,
    /// When a heartbeat was last answered.
    pub last_heartbeat: Option<SystemTime>,
    /// Calls made and failed, per call (see [`SmsCall::ALL`]).
    pub calls: Vec<(SmsCall, u64, u64)>,
}

#[derive(Debug)]
struct Link {
    state: LinkState,
    since: SystemTime,
    last_heartbeat: Option<SystemTime>,
}

/// A client of one SMS, shared by everything in the host that talks to it.
#[derive(Debug)]
pub struct Sms {
    grpc: Url,
    endpoint: Endpoint,
    files: Option<Url>,
    heartbeat: Duration,
    advertise: Option<String>,
    node_uuid: String,
    /// Made on first use, inside the runtime (a lazy channel needs one).
    channel: OnceLock<Channel>,
    http: reqwest::Client,
    link: Mutex<Link>,
    published: publish::Published,
    /// Calls made and failed, per call; shared with the reporter.
    made: Counters,
    failed: Counters,
    /// Execution and instance reports, sent in the background.
    reports: reports::Reporter,
    /// Task ids it recently did not know.
    unknown: unknown::UnknownTasks,
    /// The longest a lookup of an unknown id may take when its call has no
    /// deadline of its own.
    lookup_timeout: Duration,
}

impl Sms {
    /// A client for the SMS `config` names, or `None` when it names none.
    /// The node's identity is read from (or created in) `data_dir`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the node identity cannot be kept in `data_dir`;
    /// [`Error::InvalidRequest`] for an `sms.advertise` that is not `HOST:PORT`.
    pub fn from_config(config: &SmsConfig, data_dir: &Path) -> Result<Option<Sms>> {
        let Some(grpc) = config.grpc.clone() else {
            return Ok(None);
        };
        if let Some(advertise) = &config.advertise {
            node::parse_advertised(advertise)?;
        }
        let endpoint = Endpoint::from_shared(grpc.to_string())
            .map_err(|e| Error::InvalidRequest {
                field: "sms.grpc",
                reason: format!("`{grpc}` is not a gRPC address: {e}"),
            })?
            .connect_timeout(config.request_timeout)
            .timeout(config.request_timeout);
        let http = reqwest::Client::builder()
            .user_agent(concat!("spearlet/", env!("CARGO_PKG_VERSION")))
            .timeout(config.request_timeout.max(Duration::from_secs(30)))
            .build()
            .map_err(Error::endpoint("the SMS's HTTP client"))?;
        let node_uuid = node::identity(data_dir)?;
        let (made, failed) = (Counters::default(), Counters::default());
        let reports = reports::Reporter::new(
            reports::Target {
                endpoint: endpoint.clone(),
                grpc: grpc.to_string(),
                node_uuid: node_uuid.clone(),
                made: Arc::clone(&made),
                failed: Arc::clone(&failed),
            },
            reports::Settings::default(),
        );
        Ok(Some(Sms {
            node_uuid,
            published: publish::Published::open(data_dir)?,
            grpc,
            endpoint,
            files: config.http.clone(),
            heartbeat: config.heartbeat_interval,
            advertise: config.advertise.clone(),
            channel: OnceLock::new(),
            http,
            link: Mutex::new(Link {
                state: LinkState::Connecting,
                since: SystemTime::now(),
                last_heartbeat: None,
            }),
            made,
            failed,
            reports,
            unknown: unknown::UnknownTasks::new(config.unknown_task_ttl),
            lookup_timeout: config.request_timeout.saturating_mul(2),
        }))
    }

    /// This node's uuid: made once, kept in the data directory, so a
    /// restart is the same node.
    pub fn node_uuid(&self) -> &str {
        &self.node_uuid
    }

    /// Execution and instance reports to the SMS: queued, never blocking,
    /// sent in the background (see [`Reporter`]).
    pub fn reports(&self) -> &Reporter {
        &self.reports
    }

    /// The SMS's gRPC address.
    pub fn endpoint(&self) -> &str {
        self.grpc.as_str()
    }

    /// The link now.
    pub fn status(&self) -> LinkStatus {
        let link = self.link();
        LinkStatus {
            endpoint: self.grpc.to_string(),
            node_uuid: self.node_uuid.clone(),
            state: link.state.clone(),
            since: link.since,
            last_heartbeat: link.last_heartbeat,
            calls: SmsCall::ALL
                .iter()
                .map(|c| {
                    (
                        *c,
                        self.made[c.index()].load(Ordering::Relaxed),
                        self.failed[c.index()].load(Ordering::Relaxed),
                    )
                })
                .collect(),
        }
    }

    fn link(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_state(&self, state: LinkState) {
        let mut link = self.link();
        if link.state != state {
            link.since = SystemTime::now();
            link.state = state;
        }
    }

    fn channel(&self) -> Channel {
        self.channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone()
    }

    /// Counts `call` and translates its failure.
    fn outcome<T>(&self, call: SmsCall, result: Result<T, tonic::Status>) -> Result<T> {
        self.made[call.index()].fetch_add(1, Ordering::Relaxed);
        result.map_err(|status| {
            self.failed[call.index()].fetch_add(1, Ordering::Relaxed);
            self.status_error(call, &status)
        })
    }

    /// An SMS answer of `success: false`, counted as a failure.
    fn refused(&self, call: SmsCall, message: String) -> Error {
        self.failed[call.index()].fetch_add(1, Ordering::Relaxed);
        Error::SmsRefused {
            call,
            endpoint: self.grpc.to_string(),
            message,
        }
    }

    /// Transport trouble and an SMS in difficulty are "unavailable" (worth
    /// retrying); an answer about the request itself is a refusal.
    fn status_error(&self, call: SmsCall, status: &tonic::Status) -> Error {
        status_error(call, self.grpc.as_str(), status)
    }
}

/// Per-call counters, indexed by [`SmsCall::index`].
type Counters = Arc<[AtomicU64; SmsCall::ALL.len()]>;

/// Transport trouble and an SMS in difficulty are "unavailable" (worth
/// retrying); an answer about the request itself is a refusal.
fn status_error(call: SmsCall, endpoint: &str, status: &tonic::Status) -> Error {
    use tonic::Code;
    let endpoint = endpoint.to_owned();
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented => Error::SmsRefused {
            call,
            endpoint,
            message: format!("{:?}: {}", status.code(), status.message()),
        },
        _ => Error::SmsUnavailable {
            call,
            endpoint,
            reason: transport_reason(status),
        },
    }
}

/// The most specific reason tonic gives: its message, else the source chain
/// (a refused connection is only named there).
fn transport_reason(status: &tonic::Status) -> String {
    let mut reason = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    let mut source = std::error::Error::source(status);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
