//! Do the plugin's stream functions stop when cancelled? Each one is started
//! with parameters made up from its signature, cancelled once it has
//! emitted (or after a short while), and must return within a bound.
//!
//! The cancellation flag is the contract (`ctx.should_stop()`): the sink
//! keeps taking chunks after it is raised, so a stream that stops only
//! because nobody listens any more does not pass.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spearlet::loader::{CallRequest, CallSink, FunctionKind, Plugin, PluginInstance};
use spearlet::signature::ParamKind;
use spearlet::{Error, LogLevel, Value};

use super::report::{Outcome, Verdict};

/// How long a stream may run on after it is cancelled.
pub const CANCEL_BOUND: Duration = Duration::from_secs(2);

/// How long a stream is left to start emitting before it is cancelled
/// anyway (one that emits nothing must stop all the same).
const FIRST_CHUNK_WAIT: Duration = Duration::from_millis(200);

pub fn stream_cancel(plugin: &Arc<Plugin>) -> Outcome {
    const CHECK: &str = "stream cancel";
    let streams: Vec<_> = plugin
        .functions()
        .iter()
        .filter(|f| f.kind == FunctionKind::Stream)
        .collect();
    if streams.is_empty() {
        return Outcome::new(CHECK, Verdict::Skip, "no stream functions");
    }
    let mut stopped = Vec::new();
    let mut problems = Vec::new();
    let mut unstarted = Vec::new();
    for f in streams {
        match cancel_one(plugin, &f.name, &f.signature) {
            Ok(line) => stopped.push(format!("{}: {line}", f.name)),
            Err(Unchecked(line)) => unstarted.push(format!("{}: {line}", f.name)),
            Err(Failed(line)) => problems.push(format!("{}: {line}", f.name)),
        }
    }
    if !problems.is_empty() {
        problems.extend(stopped);
        return Outcome::judged(CHECK, false, problems.join("; "));
    }
    if stopped.is_empty() {
        return Outcome::new(CHECK, Verdict::Skip, unstarted.join("; "));
    }
    stopped.extend(unstarted);
    Outcome::judged(CHECK, true, stopped.join("; "))
}

enum NotStopped {
    /// It could not be started with made-up parameters: not judged.
    Unchecked(String),
    Failed(String),
}
use NotStopped::{Failed, Unchecked};

fn cancel_one(plugin: &Arc<Plugin>, name: &str, signature: &str) -> Result<String, NotStopped> {
    let handle = plugin.function(name).map_err(|e| Failed(e.to_string()))?;
    let params = made_up_params(signature);
    let mut instance =
        PluginInstance::new(plugin, &[]).map_err(|e| Failed(format!("{}: {e}", e.kind())))?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let (first_tx, first_rx) = mpsc::sync_channel(1);
    let sink = Arc::new(CountingSink {
        chunks: AtomicU64::new(0),
        first: first_tx,
    });
    let (done_tx, done_rx) = mpsc::channel();
    {
        let cancelled = Arc::clone(&cancelled);
        let sink = Arc::clone(&sink);
        std::thread::spawn(move || {
            let request = CallRequest {
                sink: &*sink,
                ..CallRequest::new("plugin-check-stream", &cancelled).with_params(&params)
            };
            let outcome = instance.call(handle, &request);
            let _ = done_tx.send((outcome, Instant::now()));
        });
    }
    let _ = first_rx.recv_timeout(FIRST_CHUNK_WAIT);
    if let Ok((outcome, _)) = done_rx.try_recv() {
        let chunks = sink.chunks.load(Ordering::Relaxed);
        return match outcome {
            Err(Error::PluginFailed { code, message, .. }) if code == "invalid_argument" => {
                Err(Unchecked(format!(
                    "not started: made-up parameters were refused ({message})"
                )))
            }
            Err(e @ Error::PluginPanicked { .. }) => Err(Failed(format!("{}: {e}", e.kind()))),
            _ => Ok(format!(
                "finished by itself after {chunks} chunk(s), before it could be cancelled"
            )),
        };
    }
    let raised = Instant::now();
    cancelled.store(true, Ordering::Release);
    match done_rx.recv_timeout(CANCEL_BOUND) {
        Ok((Err(e @ Error::PluginPanicked { .. }), _)) => {
            Err(Failed(format!("panicked when cancelled: {e}")))
        }
        Ok((_, ended)) => Ok(format!(
            "stopped {:?} after cancellation ({} chunk(s))",
            ended.saturating_duration_since(raised),
            sink.chunks.load(Ordering::Relaxed)
        )),
        Err(_) => Err(Failed(format!(
            "still running {CANCEL_BOUND:?} after it was cancelled ({} chunk(s) so far): \
             poll ctx.should_stop() in its loop",
            sink.chunks.load(Ordering::Relaxed)
        ))),
    }
}

/// Values for a function's required parameters, by declared kind: numbers
/// large enough that a counting stream runs until it is stopped.
fn made_up_params(signature: &str) -> Vec<(String, Value)> {
    spearlet::signature::params(signature)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !p.optional)
        .map(|p| {
            let value = match p.kind {
                ParamKind::Integer => Value::I64(1_000_000),
                ParamKind::Float => Value::F64(1.0),
                ParamKind::Bool => Value::Bool(true),
                ParamKind::Bytes => Value::Bytes(b"spearlet plugin check".to_vec()),
                ParamKind::Text | ParamKind::Other => {
                    Value::String("spearlet plugin check".to_owned())
                }
            };
            (p.name, value)
        })
        .collect()
}

/// Takes every chunk (after cancellation too) and reports the first.
struct CountingSink {
    chunks: AtomicU64,
    first: mpsc::SyncSender<()>,
}

impl CallSink for CountingSink {
    fn emit(&self, _chunk: Value) -> bool {
        if self.chunks.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = self.first.try_send(());
        }
        true
    }

    fn log(&self, _level: LogLevel, _line: &str) {}
}
