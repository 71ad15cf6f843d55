//! Shared helpers: loading sample plugins and calling them.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use spearlet::config::ArtifactConfig;
use spearlet::loader::{CallRequest, CallSink, Plugin, PluginInstance};
use spearlet::{Config, LogLevel, Value};
use spearlet_test_artifacts::Artifact;

/// A test host's configuration: state in `data_dir`, local artifacts from
/// where the test plugins are built, everything else at its defaults.
pub fn config_in(data_dir: &std::path::Path) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        artifacts: ArtifactConfig {
            roots: vec![Artifact::Echo.path().parent().unwrap().to_owned()],
            ..ArtifactConfig::default()
        },
        ..Config::default()
    }
}

pub fn load(artifact: Artifact) -> Arc<Plugin> {
    Plugin::load_verified(artifact.path(), None)
        .unwrap_or_else(|e| panic!("{} should load: {e}", artifact.path().display()))
}

pub fn instance(plugin: &Arc<Plugin>) -> PluginInstance {
    PluginInstance::new(plugin, &[]).expect("instance")
}

pub fn params(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Calls `function` with `params` on `instance`, no deadline, nothing streamed.
pub fn call(
    instance: &mut PluginInstance,
    function: &str,
    params: &[(&str, Value)],
) -> spearlet::Result<Value> {
    let handle = instance.plugin().function(function)?;
    let cancelled = AtomicBool::new(false);
    let params = self::params(params);
    instance.call(
        handle,
        &CallRequest::new("test-exec", &cancelled).with_params(&params),
    )
}

/// Collects what a call emits; refuses chunks after `capacity` of them.
#[derive(Default)]
pub struct Collect {
    pub chunks: Mutex<Vec<Value>>,
    pub logs: Mutex<Vec<(LogLevel, String)>>,
    pub capacity: Option<usize>,
}

impl CallSink for Collect {
    fn emit(&self, chunk: Value) -> bool {
        let mut chunks = self.chunks.lock().unwrap();
        if self.capacity.is_some_and(|c| chunks.len() >= c) {
            return false;
        }
        chunks.push(chunk);
        true
    }

    fn log(&self, level: LogLevel, line: &str) {
        self.logs.lock().unwrap().push((level, line.to_owned()));
    }
}

/// Calls with everything a request can carry.
pub fn call_with(
    instance: &mut PluginInstance,
    function: &str,
    params: &[(&str, Value)],
    cancelled: &AtomicBool,
    deadline: Option<SystemTime>,
    sink: &dyn CallSink,
) -> spearlet::Result<Value> {
    let handle = instance.plugin().function(function)?;
    let params = self::params(params);
    let mut request = CallRequest::new("test-exec", cancelled).with_params(&params);
    request.deadline = deadline;
    request.sink = sink;
    instance.call(handle, &request)
}

thread_local! {
    static YIELDS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Yields to the runtime while a test waits for a condition. No sleeping:
/// the wait ends as soon as the condition holds. A watchdog turns a wait
/// that can never end (a regression) into a failure instead of a hang.
pub async fn yield_waiting(what: &str) {
    const GIVE_UP_AFTER: u64 = 50_000_000;
    let n = YIELDS.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    assert!(n < GIVE_UP_AFTER, "gave up waiting for {what}");
    tokio::task::yield_now().await;
}
