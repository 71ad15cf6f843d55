//! The metric families one scrape writes, section by section: the host's
//! scalars as a table, then what is kept per task and function, the
//! artifact store, the SMS link and the process.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::{process, HostCollector, OTHER_TASKS};
use crate::counters::{Latency, LatencySnapshot, ENDINGS, MODES};
use crate::host::{Host, HostStats};
use crate::task::Task;

/// One unlabelled series: its family's name, help and value.
type Scalar = (&'static str, &'static str, Value);

/// An unlabelled series' value, and so its family's type.
#[derive(Debug, Clone, Copy)]
enum Value {
    Gauge(u64),
    GaugeF64(f64),
    Counter(u64),
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let host = &self.host;
        let stats = host.stats();
        let e = &mut encoder;
        scalars(e, &host_scalars(host, &stats))?;
        PerTask::collect(host).encode(e)?;
        scalars(e, &tier_and_cache_scalars(&stats))?;
        artifacts(e, host)?;
        sms(e, host)?;
        let process = process::now();
        scalars(
            e,
            &[
                (
                    "spearlet_process_resident_memory_bytes",
                    "Resident memory.",
                    Value::Gauge(process.resident_bytes),
                ),
                (
                    "spearlet_process_open_fds",
                    "Open file descriptors.",
                    Value::Gauge(process.open_fds),
                ),
                (
                    "spearlet_process_threads",
                    "Threads.",
                    Value::Gauge(process.threads),
                ),
                (
                    "spearlet_uptime_seconds",
                    "Time since the host started.",
                    Value::GaugeF64(stats.uptime.as_secs_f64()),
                ),
            ],
        )
    }
}

fn host_scalars(host: &Host, stats: &HostStats) -> [Scalar; 7] {
    [
        (
            "spearlet_executions_in_flight",
            "Executions running now.",
            Value::Gauge(stats.running as u64),
        ),
        (
            "spearlet_async_pending",
            "ASYNC executions accepted and not started.",
            Value::Gauge(stats.pending as u64),
        ),
        (
            "spearlet_tasks",
            "Tasks loaded.",
            Value::Gauge(stats.tasks as u64),
        ),
        (
            "spearlet_tasks_dormant",
            "Tasks recorded before a restart and not loaded yet.",
            Value::Gauge(host.dormant_tasks().len() as u64),
        ),
        (
            "spearlet_state_persistence_failing",
            "1 while the state journal cannot be folded into the database (records wait in the journal), else 0.",
            Value::Gauge(u64::from(stats.persistence.is_failing())),
        ),
        (
            "spearlet_state_journal_bytes",
            "Bytes in the state journal, not folded into the database yet.",
            Value::Gauge(stats.state_journal_bytes),
        ),
        (
            "spearlet_instances_quarantined",
            "Instances still running an abandoned call.",
            Value::Gauge(stats.quarantined as u64),
        ),
    ]
}

fn tier_and_cache_scalars(stats: &HostStats) -> [Scalar; 7] {
    [
        (
            "spearlet_inline_promotions",
            "Functions promoted to the inline tier.",
            Value::Counter(stats.tier.promotions),
        ),
        (
            "spearlet_inline_demotions",
            "Functions demoted after a slow inline run.",
            Value::Counter(stats.tier.demotions),
        ),
        (
            "spearlet_inline_calls",
            "Calls run inline, on the calling thread.",
            Value::Counter(stats.tier.inline_runs),
        ),
        (
            "spearlet_artifact_cache_hits",
            "Artifact lookups answered by the cache.",
            Value::Counter(stats.cache.hits),
        ),
        (
            "spearlet_artifact_cache_misses",
            "Artifact lookups that had to fetch.",
            Value::Counter(stats.cache.misses),
        ),
        (
            "spearlet_artifact_cache_bytes",
            "Bytes held by the artifact cache.",
            Value::Gauge(stats.cache.bytes),
        ),
        (
            "spearlet_artifact_cache_entries",
            "Artifacts held by the cache.",
            Value::Gauge(stats.cache.entries as u64),
        ),
    ]
}

fn scalars(encoder: &mut DescriptorEncoder, rows: &[Scalar]) -> fmt::Result {
    for &(name, help, value) in rows {
        let kind = match value {
            Value::Gauge(_) | Value::GaugeF64(_) => MetricType::Gauge,
            Value::Counter(_) => MetricType::Counter,
        };
        let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
        match value {
            Value::Gauge(v) => metric.encode_gauge(&v)?,
            Value::GaugeF64(v) => metric.encode_gauge(&v)?,
            Value::Counter(v) => metric.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
        }
    }
    Ok(())
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

/// (task label, function, mode, status).
type Invocation = (String, String, &'static str, &'static str);

/// What is kept per task (and function), added up by task label.
#[derive(Debug, Default)]
struct PerTask {
    ended: BTreeMap<Invocation, u64>,
    latency: BTreeMap<(String, String), LatencySnapshot>,
    memory: BTreeMap<(String, String), LatencySnapshot>,
    instances: BTreeMap<(String, &'static str), u64>,
    created: BTreeMap<String, u64>,
    discarded: BTreeMap<String, u64>,
    worker_crashes: BTreeMap<String, u64>,
    crash_looping: BTreeMap<String, u64>,
}

impl PerTask {
    /// Reads every task, oldest first: they keep their label past
    /// `metrics.max_task_labels`, the rest count under [`OTHER_TASKS`].
    fn collect(host: &Host) -> Self {
        let mut tasks = host.tasks().all();
        tasks.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
        let cap = host.config().metrics.max_task_labels;
        let mut out = PerTask::default();
        for (n, task) in tasks.iter().enumerate() {
            let label = if n < cap {
                task.name.clone()
            } else {
                OTHER_TASKS.to_owned()
            };
            out.add_functions(task, &label);
            out.add_pool(task, label);
        }
        out
    }

    fn add_functions(&mut self, task: &Task, label: &str) {
        for (index, function) in task.plugin.functions().iter().enumerate() {
            let Some(m) = task.function_metrics(index) else {
                continue;
            };
            for mode in MODES {
                for status in ENDINGS {
                    let count = m.ended(mode, status);
                    if count > 0 {
                        let key = (
                            label.to_owned(),
                            function.name.clone(),
                            mode.name(),
                            status.name(),
                        );
                        *self.ended.entry(key).or_default() += count;
                    }
                }
            }
            for (into, snapshot) in [
                (&mut self.latency, m.latency.snapshot()),
                (&mut self.memory, m.memory.snapshot()),
            ] {
                if snapshot.count == 0 {
                    continue;
                }
                match into.entry((label.to_owned(), function.name.clone())) {
                    Entry::Vacant(v) => {
                        v.insert(snapshot);
                    }
                    Entry::Occupied(mut o) => Latency::merge(o.get_mut(), &snapshot),
                }
            }
        }
    }

    fn add_pool(&mut self, task: &Task, label: String) {
        let pool = task.pool.stats();
        for (state, value) in [
            ("idle", pool.idle),
            ("busy", pool.busy),
            ("quarantined", pool.quarantined),
        ] {
            *self.instances.entry((label.clone(), state)).or_default() += value as u64;
        }
        *self.created.entry(label.clone()).or_default() += pool.created;
        if task.isolation == crate::isolate::Isolation::Process {
            *self.worker_crashes.entry(label.clone()).or_default() += pool.worker_crashes;
            *self.crash_looping.entry(label.clone()).or_default() += u64::from(pool.crash_looping);
        }
        *self.discarded.entry(label).or_default() += pool.discarded;
    }

    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let series: Vec<_> = self
            .ended
            .iter()
            .map(|((t, f, m, s), v)| {
                let labels = [
                    ("task", t.as_str()),
                    ("function", f.as_str()),
                    ("mode", m),
                    ("status", s),
                ];
                (labels, *v)
            })
            .collect();
        counters(
            e,
            "spearlet_invocations",
            "Executions ended, by task, function, mode and final status.",
            &series,
        )?;
        histograms(
            e,
            "spearlet_invocation_duration_seconds",
            "Server-side latency of executions, from acceptance to end.",
            &by_function(&self.latency),
        )?;
        histograms(
            e,
            "spearlet_invocation_memory_peak_bytes",
            "Peak bytes the plugin had live during a call (plugins built with the SDK's alloc-stats).",
            &by_function(&self.memory),
        )?;
        let series: Vec<_> = self
            .instances
            .iter()
            .map(|((t, s), v)| ([("task", t.as_str()), ("state", s)], *v))
            .collect();
        gauges(
            e,
            "spearlet_pool_instances",
            "Plugin instances by task and state.",
            &series,
        )?;
        self.encode_pools(e)
    }

    fn encode_pools(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        counters(
            e,
            "spearlet_pool_instances_created",
            "Plugin instances created.",
            &by_task(&self.created),
        )?;
        counters(
            e,
            "spearlet_pool_instances_discarded",
            "Plugin instances discarded after a panic.",
            &by_task(&self.discarded),
        )?;
        counters(
            e,
            "spearlet_worker_crashes",
            "Worker processes of process-tier tasks that crashed (a signal, an exit, garbage).",
            &by_task(&self.worker_crashes),
        )?;
        gauges(
            e,
            "spearlet_task_crash_looping",
            "1 while a process-tier task backs off after repeated worker crashes.",
            &by_task(&self.crash_looping),
        )
    }
}

fn by_function(
    map: &BTreeMap<(String, String), LatencySnapshot>,
) -> Vec<([(&'static str, &str); 2], LatencySnapshot)> {
    map.iter()
        .map(|((t, f), h)| ([("task", t.as_str()), ("function", f.as_str())], h.clone()))
        .collect()
}

fn by_task(map: &BTreeMap<String, u64>) -> Vec<([(&'static str, &str); 1], u64)> {
    map.iter()
        .map(|(t, v)| ([("task", t.as_str())], *v))
        .collect()
}

fn artifacts(e: &mut DescriptorEncoder, host: &Host) -> fmt::Result {
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
    scalars(
        e,
        &[
            (
                "spearlet_artifact_download_attempts",
                "Download attempts, retries included.",
                Value::Counter(artifacts.download_attempts),
            ),
            (
                "spearlet_artifact_download_failures",
                "Download attempts that failed.",
                Value::Counter(artifacts.download_failures),
            ),
            (
                "spearlet_artifact_download_bytes",
                "Bytes downloaded.",
                Value::Counter(artifacts.download_bytes),
            ),
        ],
    )
}

fn sms(e: &mut DescriptorEncoder, host: &Host) -> fmt::Result {
    let Some(link) = host.sms_status() else {
        return Ok(());
    };
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
    )
}
