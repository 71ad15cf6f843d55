//! The worker process: `spearlet worker`, started by a host with a channel
//! as its standard input. It loads one plugin through the same loader the
//! host uses (so the bytes it maps are the bytes it hashed), makes one
//! instance, and runs the calls the host posts, one at a time, until the
//! host kills it or goes away.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use spear_plugin_sdk::{LogLevel, Value};

use super::codec::{CallEnd, CallMessage, Description, LoadMode, ToHost, ToWorker};
use super::shm::{Channel, Direction, SLOT_CAPACITY};
use super::wake::{self, Side, SpinBudget};
use crate::digest::Sha256Digest;
use crate::error::Error;
use crate::loader::{CallRequest, CallSink, Plugin, PluginInstance};

/// How often an idle worker checks that its host is still there (besides
/// the parent-death signal, which a host thread's exit would also send).
const PARENT_CHECK: Duration = Duration::from_secs(1);

/// Runs the worker until the host goes away; an `Err` names a protocol
/// breach (the host exits are silent).
///
/// A program embedding spearlet can be its own worker program (`[tiers]
/// worker_program`): it calls this when its first argument is `worker`.
///
/// # Errors
///
/// When standard input is not a channel, or the host posts something out of turn.
pub fn serve() -> Result<(), String> {
    // The host says who it is: a host that died before this line ran
    // left this process to another parent, and it must not serve that one.
    let parent = std::env::var(super::process::PARENT_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw);
    // Dies with the host even if the host is killed outright.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot ask to die with the host: {e}"))?;
    if parent.is_none() || rustix::process::getppid() != parent {
        return Ok(());
    }
    let ours = format!("{:016x}", super::PROTOCOL);
    match std::env::var(super::process::PROTOCOL_ENV) {
        Ok(theirs) if theirs == ours => {}
        theirs => {
            return Err(format!(
                "this worker program speaks channel protocol {ours}, its host {}: \
                 they are different spearlet builds (rebuild, or point [tiers] \
                 worker_program at the host's own build)",
                theirs.as_deref().unwrap_or("none")
            ))
        }
    }
    let channel = Channel::open(std::io::stdin().as_fd())
        .map_err(|e| format!("standard input is not a spearlet channel: {e}"))?;
    let worker = Worker {
        channel,
        parent,
        link: Mutex::new(Link {
            seen: 0,
            budget: SpinBudget::for_this_machine(),
            buf: Vec::new(),
        }),
        out: Mutex::new(Vec::new()),
    };
    worker.lock().seen = wake::current(&worker.channel, Side::Worker);
    worker.send(&ToHost::Ready)?;
    let mut loaded: Option<(Arc<Plugin>, Option<PluginInstance>)> = None;
    loop {
        let Some(message) = worker.receive()? else {
            return Ok(());
        };
        match message {
            ToWorker::Load {
                source,
                digest,
                config,
                memory_max,
                mode,
            } => {
                let (reply, kept) = load(&source, digest, &config, memory_max, mode);
                loaded = kept;
                worker.send(&reply)?;
            }
            ToWorker::Call(call) => {
                let Some((plugin, Some(instance))) = loaded.as_mut() else {
                    return Err("a call before an instance was made".to_owned());
                };
                let done = worker.call(plugin, instance, call)?;
                worker.send(&done)?;
            }
            ToWorker::Ack { .. } => return Err("an acknowledgement nobody waited for".to_owned()),
        }
    }
}

/// The worker's end of the channel.
struct Worker {
    channel: Channel,
    parent: Option<rustix::process::Pid>,
    /// What waiting needs, shared with the call's sink (which runs on the
    /// same thread, inside the plugin's call).
    link: Mutex<Link>,
    /// The storage each message to the host is encoded into.
    out: Mutex<Vec<u8>>,
}

struct Link {
    seen: u32,
    budget: SpinBudget,
    buf: Vec<u8>,
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, message: &ToHost) -> Result<(), String> {
        let mut bytes = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        message.encode_into(&mut bytes);
        self.channel
            .write(Direction::ToHost, &bytes)
            .map_err(|e| e.to_string())?;
        drop(bytes);
        wake::post(&self.channel, Side::Worker);
        Ok(())
    }

    /// The host's next message; `None` once the host is gone.
    fn receive(&self) -> Result<Option<ToWorker>, String> {
        let mut link = self.lock();
        let Link { seen, budget, buf } = &mut *link;
        let parent = self.parent;
        let gone = || rustix::process::getppid() != parent;
        loop {
            match wake::wait(
                &self.channel,
                Side::Worker,
                *seen,
                budget,
                None,
                &gone,
                PARENT_CHECK,
            ) {
                Some(now) => {
                    *seen = now;
                    break;
                }
                None if gone() => return Ok(None),
                None => {}
            }
        }
        self.channel
            .read(Direction::ToWorker, buf)
            .map_err(|e| e.to_string())?;
        ToWorker::decode(buf).map(Some).map_err(|e| e.to_string())
    }

    fn call(
        &self,
        plugin: &Plugin,
        instance: &mut PluginInstance,
        call: CallMessage,
    ) -> Result<ToHost, String> {
        let function = plugin
            .function_at(call.function as usize)
            .ok_or_else(|| format!("no function #{} in the table", call.function))?;
        // Lowered by the host before it posted the call.
        let cancelled = self.channel.cancel_flag();
        let sink = ChannelSink {
            worker: self,
            broken: AtomicBool::new(false),
            oversized: AtomicBool::new(false),
        };
        let request = CallRequest {
            execution_id: &call.execution_id,
            params: &call.params,
            environment: &call.environment,
            // The host sent the traceparent with the other headers.
            headers: &call.headers,
            traceparent: None,
            deadline: (call.deadline_unix_nanos != 0)
                .then(|| UNIX_EPOCH + Duration::from_nanos(call.deadline_unix_nanos)),
            cancelled,
            sink: &sink,
        };
        let result = instance.call(function, &request);
        if sink.broken.load(Ordering::Acquire) {
            return Err("the host stopped answering mid-call".to_owned());
        }
        let end = match result {
            _ if sink.oversized.load(Ordering::Acquire) => too_large("a stream chunk"),
            Ok(value) if encoded_len(&value) > SLOT_CAPACITY => too_large("the result"),
            Ok(value) => CallEnd::Returned(value),
            Err(Error::PluginFailed {
                code,
                message,
                retriable,
                ..
            }) => CallEnd::Failed {
                code,
                message,
                retriable,
            },
            Err(Error::PluginPanicked { message, .. }) => CallEnd::Panicked { message },
            Err(other) => CallEnd::Failed {
                code: other.kind().to_owned(),
                message: other.to_string(),
                retriable: false,
            },
        };
        Ok(ToHost::Done {
            end,
            memory: plugin.call_memory(),
        })
    }

    /// Sends a chunk or a log line and waits for the host's answer.
    fn exchange(&self, message: &ToHost) -> Result<bool, String> {
        self.send(message)?;
        match self.receive()? {
            Some(ToWorker::Ack { accepted }) => Ok(accepted),
            Some(_) => Err("the host answered a chunk with something else".to_owned()),
            None => Err("the host went away".to_owned()),
        }
    }
}

/// The longest log line sent to the host; longer ones are cut.
const LOG_LINE_CAP: usize = 64 << 10;

/// A call whose result (or a chunk of it) cannot cross the channel.
fn too_large(what: &str) -> CallEnd {
    CallEnd::Failed {
        code: "payload_too_large".to_owned(),
        message: format!(
            "{what} is larger than a worker process can hand back ({SLOT_CAPACITY} bytes)"
        ),
        retriable: false,
    }
}

/// About how many bytes `value` takes in a message.
fn encoded_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len() + 16,
        Value::Bytes(b) => b.len() + 16,
        Value::Raw { type_url, bytes } => type_url.len() + bytes.len() + 32,
        _ => 16,
    }
}

/// Chunks and log lines go to the host, one exchange each: the host's
/// answer is what `emit` returns, so backpressure and a departed consumer
/// reach the plugin exactly as they do in-process.
struct ChannelSink<'a> {
    worker: &'a Worker,
    broken: AtomicBool,
    /// A chunk was too large to send: the call fails with `payload_too_large`.
    oversized: AtomicBool,
}

impl CallSink for ChannelSink<'_> {
    fn emit(&self, chunk: Value) -> bool {
        if self.broken.load(Ordering::Acquire) || self.oversized.load(Ordering::Acquire) {
            return false;
        }
        if encoded_len(&chunk) > SLOT_CAPACITY {
            self.oversized.store(true, Ordering::Release);
            return false;
        }
        self.worker
            .exchange(&ToHost::Chunk(chunk))
            .unwrap_or_else(|_| {
                self.broken.store(true, Ordering::Release);
                false
            })
    }

    fn log(&self, level: LogLevel, line: &str) {
        let mut cut = line.len().min(LOG_LINE_CAP);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        if !self.broken.load(Ordering::Acquire)
            && self
                .worker
                .exchange(&ToHost::Log(level, line[..cut].to_owned()))
                .is_err()
        {
            self.broken.store(true, Ordering::Release);
        }
    }
}

type Loaded = Option<(Arc<Plugin>, Option<PluginInstance>)>;

fn load(
    source: &str,
    digest: [u8; 32],
    config: &[(String, String)],
    memory_max: u64,
    mode: LoadMode,
) -> (ToHost, Loaded) {
    if mode == LoadMode::Probe {
        let reply = match Plugin::probe_handed_over(source.as_ref()) {
            Ok(()) => ToHost::Probed,
            Err(e) => ToHost::Refused {
                kind: e.kind().to_owned(),
                message: e.to_string(),
            },
        };
        return (reply, None);
    }
    let digest = Sha256Digest::from_bytes(digest);
    let plugin = match Plugin::load_handed_over(source.as_ref(), &digest) {
        Ok(plugin) => plugin,
        Err(e) => {
            return (
                ToHost::Refused {
                    kind: e.kind().to_owned(),
                    message: e.to_string(),
                },
                None,
            )
        }
    };
    let description = describe(&plugin);
    if mode == LoadMode::Describe {
        return (ToHost::Loaded(description), None);
    }
    if memory_max > 0 {
        if let Err(e) = cap_memory(memory_max) {
            return (
                ToHost::Refused {
                    kind: "worker".to_owned(),
                    message: format!("cannot cap the worker's memory: {e}"),
                },
                None,
            );
        }
    }
    match PluginInstance::new(&plugin, config) {
        Ok(instance) => (ToHost::Loaded(description), Some((plugin, Some(instance)))),
        Err(Error::InstanceCreation { code, message, .. }) => {
            (ToHost::InstanceRefused { code, message }, None)
        }
        Err(e) => (
            ToHost::InstanceRefused {
                code: e.kind().to_owned(),
                message: e.to_string(),
            },
            None,
        ),
    }
}

fn describe(plugin: &Plugin) -> Description {
    Description {
        name: plugin.name().to_owned(),
        version: plugin.version().to_owned(),
        sdk_version: plugin.sdk_version().to_owned(),
        abi_version: plugin.abi_version().to_owned(),
        root_fields: plugin.root_fields(),
        functions: plugin.functions().to_vec(),
        default_function: plugin.default_function().map(|f| f.index()),
    }
}

/// Caps the data memory (heap and private mappings) this process may add
/// from now on to `bytes`: an allocation past it fails, and a Rust plugin
/// then aborts with "memory allocation of N bytes failed", which the host
/// reads on this process's standard error.
fn cap_memory(bytes: u64) -> std::io::Result<()> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    // The sixth field: data and stack, in pages.
    let data_pages: u64 = statm
        .split_whitespace()
        .nth(5)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other("unreadable /proc/self/statm"))?;
    let page = rustix::param::page_size() as u64;
    let limit = data_pages.saturating_mul(page).saturating_add(bytes);
    rustix::process::setrlimit(
        rustix::process::Resource::Data,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )?;
    Ok(())
}
