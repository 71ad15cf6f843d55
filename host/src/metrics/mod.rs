//! `GET /metrics`: the host's counters in the Prometheus / OpenMetrics text
//! format (`spearlet serve --metrics-listen ADDR`, `[metrics] listen`).
//!
//! Nothing here keeps counters of its own: every scrape reads the counters
//! the host keeps anyway — the same ones `GetHealth` and `GetStats` report
//! — so the endpoint and the RPCs never disagree, and a host nobody scrapes
//! pays nothing for it. Task labels use the task's name; past
//! `metrics.max_task_labels` tasks (oldest first keep theirs), the rest are
//! added up under `task="_other"`, so a host with many tasks cannot blow up
//! the time series count.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::telemetry::{Latency, LatencySnapshot, ENDINGS, MODES};

mod process;

pub use process::resident_bytes;

/// The label under which tasks past the cap are counted.
pub const OTHER_TASKS: &str = "_other";

/// The host's counters as a Prometheus collector.
#[derive(Debug)]
pub struct HostCollector {
    host: Host,
}

impl HostCollector {
    /// A collector reading `host`.
    pub fn new(host: Host) -> Self {
        HostCollector { host }
    }
}

/// The exposition of `host`'s counters now, in the OpenMetrics text format.
///
/// # Errors
///
/// [`Error::Internal`] if encoding fails (it writes to a string).
pub fn render(host: &Host) -> Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HostCollector::new(host.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|e| Error::Internal(format!("encoding metrics: {e}")))?;
    Ok(out)
}

/// The warning to give when `/metrics` is served at `addr` beyond loopback
/// with no `metrics.token`: the exposition names every task, so whoever
/// reaches the address learns what runs here. `None` when there is no
/// reason to warn.
pub fn exposure_warning(addr: std::net::SocketAddr, token: Option<&str>) -> Option<String> {
    if addr.ip().is_loopback() || token.is_some() {
        return None;
    }
    Some(format!(
        "metrics are served on {addr}, beyond loopback, with no metrics.token: anyone who \
         reaches this address reads the task names and counters; set metrics.token"
    ))
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. With
/// `metrics.token` set, a scrape must send `authorization: Bearer TOKEN`
/// (else 401), compared in constant time.
///
/// # Errors
///
/// [`Error::InvalidRequest`] for an empty `metrics.token`;
/// [`Error::Internal`] when the HTTP server fails.
pub async fn serve(
    host: Host,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        if let Some(warning) = exposure_warning(addr, host.config().metrics.token.as_deref()) {
            tracing::warn!(%addr, "{warning}");
        }
    }
    let app = router(host)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Internal(format!("metrics endpoint: {e}")))
}

/// `GET /metrics`, with `metrics.token` checked, for any HTTP server of
/// the host (the metrics listener, the node's HTTP port).
///
/// # Errors
///
/// [`Error::InvalidRequest`] for an empty `metrics.token`.
pub fn router(host: Host) -> Result<axum::Router> {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let token = match host.config().metrics.token.as_deref() {
        Some(token) if token.trim().is_empty() => {
            return Err(Error::InvalidRequest {
                field: "metrics.token",
                reason: "is empty: set a token, or remove the key to serve without one".into(),
            })
        }
        Some(token) => Some(crate::auth::Tokens::of(&[token.trim()])),
        None => None,
    };
    Ok(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: HeaderMap| {
            let host = host.clone();
            let allowed = token.as_ref().is_none_or(|token| {
                headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::auth::bearer)
                    .is_some_and(|given| token.accepts(given))
            });
            async move {
                if !allowed {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        "this endpoint needs `authorization: Bearer TOKEN` (metrics.token)\n",
                    )
                        .into_response();
                }
                match render(&host) {
                    Ok(text) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                        .into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }
        }),
    ))
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl prometheus_client::encoding::EncodeGaugeValue,
) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A labelled family: `series` is (labels, value).
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        family
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

fn histograms<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(L, LatencySnapshot)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        family
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &h.buckets, None)?;
    }
    Ok(())
}

type Invocation = (String, String, &'static str, &'static str);

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let host = &self.host;
        let stats = host.stats();
        let e = &mut encoder;
        gauge(
            e,
            "spearlet_executions_in_flight",
            "Executions running now.",
            stats.running,
        )?;
        gauge(
            e,
            "spearlet_async_pending",
            "ASYNC executions accepted and not started.",
            stats.pending,
        )?;
        gauge(e, "spearlet_tasks", "Tasks loaded.", stats.tasks)?;
        gauge(
            e,
            "spearlet_tasks_dormant",
            "Tasks recorded before a restart and not loaded yet.",
            host.dormant_tasks().len(),
        )?;
        gauge(
            e,
            "spearlet_state_persistence_failing",
            "1 while the state journal cannot be folded into the database (records wait in the journal), else 0.",
            u64::from(stats.persistence.is_failing()),
        )?;
        gauge(
            e,
            "spearlet_state_journal_bytes",
            "Bytes in the state journal, not folded into the database yet.",
            stats.state_journal_bytes,
        )?;

        // Per task, oldest first: they keep their label past the cap.
        let mut tasks = host.tasks().all();
        tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        let cap = host.config().metrics.max_task_labels;
        let mut ended: BTreeMap<Invocation, u64> = BTreeMap::new();
        let mut latency: BTreeMap<(String, String), LatencySnapshot> = BTreeMap::new();
        let mut memory: BTreeMap<(String, String), LatencySnapshot> = BTreeMap::new();
        let mut instances: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        let mut created: BTreeMap<String, u64> = BTreeMap::new();
        let mut discarded: BTreeMap<String, u64> = BTreeMap::new();
        let mut worker_crashes: BTreeMap<String, u64> = BTreeMap::new();
        let mut crash_looping: BTreeMap<String, u64> = BTreeMap::new();
        for (n, task) in tasks.iter().enumerate() {
            let label = if n < cap {
                task.name.clone()
            } else {
                OTHER_TASKS.to_owned()
            };
            for (index, function) in task.plugin.functions().iter().enumerate() {
                let Some(m) = task.function_metrics(index) else {
                    continue;
                };
                for mode in MODES {
                    for status in ENDINGS {
                        let count = m.ended(mode, status);
                        if count > 0 {
                            let key = (
                                label.clone(),
                                function.name.clone(),
                                mode.name(),
                                status.name(),
                            );
                            *ended.entry(key).or_default() += count;
                        }
                    }
                }
                for (into, snapshot) in [
                    (&mut latency, m.latency.snapshot()),
                    (&mut memory, m.memory.snapshot()),
                ] {
                    if snapshot.count == 0 {
                        continue;
                    }
                    match into.entry((label.clone(), function.name.clone())) {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(snapshot);
                        }
                        std::collections::btree_map::Entry::Occupied(mut o) => {
                            Latency::merge(o.get_mut(), &snapshot);
                        }
                    }
                }
            }
            let pool = task.pool.stats();
            for (state, value) in [
                ("idle", pool.idle),
                ("busy", pool.busy),
                ("quarantined", pool.quarantined),
            ] {
                *instances.entry((label.clone(), state)).or_default() += value as u64;
            }
            *created.entry(label.clone()).or_default() += pool.created;
            if task.isolation == crate::isolate::Isolation::Process {
                *worker_crashes.entry(label.clone()).or_default() += pool.worker_crashes;
                *crash_looping.entry(label.clone()).or_default() += u64::from(pool.crash_looping);
            }
            *discarded.entry(label).or_default() += pool.discarded;
        }
        let series: Vec<_> = ended
            .iter()
            .map(|((t, f, m, s), v)| {
                (
                    [
                        ("task", t.as_str()),
                        ("function", f.as_str()),
                        ("mode", m),
                        ("status", s),
                    ],
                    *v,
                )
            })
            .collect();
        counters(
            e,
            "spearlet_invocations",
            "Executions ended, by task, function, mode and final status.",
            &series,
        )?;
        let series: Vec<_> = latency
            .iter()
            .map(|((t, f), h)| ([("task", t.as_str()), ("function", f.as_str())], h.clone()))
            .collect();
        histograms(
            e,
            "spearlet_invocation_duration_seconds",
            "Server-side latency of executions, from acceptance to end.",
            &series,
        )?;
        let series: Vec<_> = memory
            .iter()
            .map(|((t, f), h)| ([("task", t.as_str()), ("function", f.as_str())], h.clone()))
            .collect();
        histograms(
            e,
            "spearlet_invocation_memory_peak_bytes",
            "Peak bytes the plugin had live during a call (plugins built with the SDK's alloc-stats).",
            &series,
        )?;
        let series: Vec<_> = instances
            .iter()
            .map(|((t, s), v)| ([("task", t.as_str()), ("state", s)], *v))
            .collect();
        gauges(
            e,
            "spearlet_pool_instances",
            "Plugin instances by task and state.",
            &series,
        )?;
        let per_task = |map: &BTreeMap<String, u64>| -> Vec<([(&'static str, String); 1], u64)> {
            map.iter()
                .map(|(t, v)| ([("task", t.clone())], *v))
                .collect()
        };
        counters(
            e,
            "spearlet_pool_instances_created",
            "Plugin instances created.",
            &per_task(&created),
        )?;
        counters(
            e,
            "spearlet_pool_instances_discarded",
            "Plugin instances discarded after a panic.",
            &per_task(&discarded),
        )?;
        counters(
            e,
            "spearlet_worker_crashes",
            "Worker processes of process-tier tasks that crashed (a signal, an exit, garbage).",
            &per_task(&worker_crashes),
        )?;
        gauges(
            e,
            "spearlet_task_crash_looping",
            "1 while a process-tier task backs off after repeated worker crashes.",
            &per_task(&crash_looping),
        )?;
        gauge(
            e,
            "spearlet_instances_quarantined",
            "Instances still running an abandoned call.",
            stats.quarantined,
        )?;

        counter(
            e,
            "spearlet_inline_promotions",
            "Functions promoted to the inline tier.",
            stats.tier.promotions,
        )?;
        counter(
            e,
            "spearlet_inline_demotions",
            "Functions demoted after a slow inline run.",
            stats.tier.demotions,
        )?;
        counter(
            e,
            "spearlet_inline_calls",
            "Calls run inline, on the calling thread.",
            stats.tier.inline_runs,
        )?;

        counter(
            e,
            "spearlet_artifact_cache_hits",
            "Artifact lookups answered by the cache.",
            stats.cache.hits,
        )?;
        counter(
            e,
            "spearlet_artifact_cache_misses",
            "Artifact lookups that had to fetch.",
            stats.cache.misses,
        )?;
        gauge(
            e,
            "spearlet_artifact_cache_bytes",
            "Bytes held by the artifact cache.",
            stats.cache.bytes,
        )?;
        gauge(
            e,
            "spearlet_artifact_cache_entries",
            "Artifacts held by the cache.",
            stats.cache.entries,
        )?;
        let loaded = host.artifacts().loaded();
        gauges(
            e,
            "spearlet_artifact_plugins_loaded",
            "Plugins loaded, by whether a task uses them; past artifacts.max_unused_loaded \
             unused ones are let go, least recently used first (a process-tier plugin's file \
             is then closed; an in-process library stays mapped: libraries are never unloaded).",
            &[
                ([("state", "in_use")], loaded.in_use as u64),
                ([("state", "unused")], loaded.unused as u64),
            ],
        )?;
        let artifacts = host.artifacts().telemetry();
        histograms(
            e,
            "spearlet_artifact_load_duration_seconds",
            "Time to resolve an artifact to a loaded plugin (verification included).",
            &[(Vec::<(&str, &str)>::new(), artifacts.loads.clone())],
        )?;
        let series: Vec<_> = artifacts
            .refused
            .iter()
            .map(|(reason, v)| ([("reason", *reason)], *v))
            .collect();
        counters(
            e,
            "spearlet_artifact_refusals",
            "Artifact loads refused or failed, by reason.",
            &series,
        )?;
        counter(
            e,
            "spearlet_artifact_download_attempts",
            "Download attempts, retries included.",
            artifacts.download_attempts,
        )?;
        counter(
            e,
            "spearlet_artifact_download_failures",
            "Download attempts that failed.",
            artifacts.download_failures,
        )?;
        counter(
            e,
            "spearlet_artifact_download_bytes",
            "Bytes downloaded.",
            artifacts.download_bytes,
        )?;

        if let Some(link) = host.sms_status() {
            let made: Vec<_> = link
                .calls
                .iter()
                .map(|(c, m, _)| ([("call", c.name())], *m))
                .collect();
            counters(
                e,
                "spearlet_sms_calls",
                "Calls made to the SMS, by call.",
                &made,
            )?;
            let failed: Vec<_> = link
                .calls
                .iter()
                .map(|(c, _, f)| ([("call", c.name())], *f))
                .collect();
            counters(
                e,
                "spearlet_sms_call_failures",
                "Calls to the SMS that failed, by call.",
                &failed,
            )?;
            let states = ["connecting", "registered", "unreachable", "left"];
            let series: Vec<_> = states
                .iter()
                .map(|s| ([("state", *s)], u64::from(link.state.word() == *s)))
                .collect();
            gauges(
                e,
                "spearlet_sms_link",
                "The link to the SMS: 1 for its current state.",
                &series,
            )?;
        }

        let process = process::now();
        gauge(
            e,
            "spearlet_process_resident_memory_bytes",
            "Resident memory.",
            process.resident_bytes,
        )?;
        gauge(
            e,
            "spearlet_process_open_fds",
            "Open file descriptors.",
            process.open_fds,
        )?;
        gauge(e, "spearlet_process_threads", "Threads.", process.threads)?;
        gauge(
            e,
            "spearlet_uptime_seconds",
            "Time since the host started.",
            stats.uptime.as_secs_f64(),
        )?;
        Ok(())
    }
}
