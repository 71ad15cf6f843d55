//! The messages a host and a worker exchange, and their encoding: a tag
//! byte, then fields as little-endian integers and length-prefixed bytes.
//!
//! Decoding never trusts a length: every read is checked against what is
//! left, and anything out of place is a [`Malformed`] message — which the
//! host treats as the worker having crashed.

use spear_plugin_sdk::{LogLevel, Value};

pub use crate::loader::PluginDescription as Description;
use crate::loader::{FunctionInfo, FunctionKind};

/// A message that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed message from the other side of the channel: {0}")]
pub struct Malformed(pub &'static str);

type Decoded<T> = Result<T, Malformed>;

/// The most items (parameters, pairs, functions) one message may list:
/// a bound on what a worker can make the host allocate by counting.
const MAX_ITEMS: usize = 1 << 16;

/// Host to worker.
#[derive(Debug, Clone, PartialEq)]
pub enum ToWorker {
    /// Load the verified library readable at `source` (its sha256 must be
    /// `digest`), as far as `mode` says.
    Load {
        /// A path the worker can open the host's verified copy at.
        source: String,
        /// The sha256 the bytes must have.
        digest: [u8; 32],
        /// The task's configuration.
        config: Vec<(String, String)>,
        /// Bytes of data memory the worker may use beyond what it had
        /// after loading (0: no cap).
        memory_max: u64,
        /// How far to go.
        mode: LoadMode,
    },
    /// Run one call on the instance.
    Call(CallMessage),
    /// The host took a chunk (or a log line): `accepted` is what the
    /// plugin's `emit` returns.
    Ack {
        /// Whether the consumer still listens.
        accepted: bool,
    },
}

/// How far a worker takes a `Load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// Only map the library (its ELF constructors run): does it survive
    /// that? The host then loads it itself, with every check.
    Probe,
    /// Load it with every check and describe it (no instance).
    Describe,
    /// Load, describe, and make the instance calls will run on.
    Instance,
}

/// What a call carries across.
#[derive(Debug, Clone, PartialEq)]
pub struct CallMessage {
    /// The function's index in the table.
    pub function: u32,
    /// The execution id.
    pub execution_id: String,
    /// Parameters.
    pub params: Vec<(String, Value)>,
    /// Environment variables.
    pub environment: Vec<(String, String)>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The deadline, as Unix nanoseconds (0: none).
    pub deadline_unix_nanos: u64,
}

/// How a call ended in the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEnd {
    /// The function returned a value.
    Returned(Value),
    /// The function returned an error.
    Failed {
        /// The plugin's code.
        code: String,
        /// Its message.
        message: String,
        /// Whether retrying may help.
        retriable: bool,
    },
    /// The function panicked (the worker's instance is poisoned).
    Panicked {
        /// The panic message.
        message: String,
    },
}

/// Worker to host.
#[derive(Debug, Clone, PartialEq)]
pub enum ToHost {
    /// The worker is up and waits for a `Load`.
    Ready,
    /// The library was mapped and the worker survived it (a probe).
    Probed,
    /// The library loaded (and the instance was made, unless only described).
    Loaded(Description),
    /// The loader refused the library.
    Refused {
        /// The error's kind.
        kind: String,
        /// Its message.
        message: String,
    },
    /// The plugin refused to create an instance.
    InstanceRefused {
        /// The plugin's code.
        code: String,
        /// Its message.
        message: String,
    },
    /// A stream chunk; the host answers with an `Ack`.
    Chunk(Value),
    /// A log line of the execution; the host answers with an `Ack`.
    Log(LogLevel, String),
    /// The call ended.
    Done {
        /// How.
        end: CallEnd,
        /// `(allocated, peak)` bytes of the call, when the plugin counts.
        memory: Option<(u64, u64)>,
    },
}

mod wire;

pub use wire::{Reader, Writer};

const LOAD: u8 = 1;
const CALL: u8 = 2;
const ACK: u8 = 3;

impl ToWorker {
    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        match self {
            ToWorker::Load {
                source,
                digest,
                config,
                memory_max,
                mode,
            } => {
                w.u8(LOAD);
                w.str(source);
                w.bytes(digest);
                w.pairs(config);
                w.u64(*memory_max);
                w.u8(match mode {
                    LoadMode::Probe => 0,
                    LoadMode::Describe => 1,
                    LoadMode::Instance => 2,
                });
            }
            ToWorker::Call(call) => encode_call(&mut w, call),
            ToWorker::Ack { accepted } => {
                w.u8(ACK);
                w.u8(u8::from(*accepted));
            }
        }
        w.finish()
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// [`Malformed`].
    pub fn decode(bytes: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(bytes);
        let message = match r.u8()? {
            LOAD => ToWorker::Load {
                source: r.string()?,
                digest: r
                    .bytes()?
                    .try_into()
                    .map_err(|_| Malformed("a digest that is not 32 bytes"))?,
                config: r.pairs()?,
                memory_max: r.u64()?,
                mode: match r.u8()? {
                    0 => LoadMode::Probe,
                    1 => LoadMode::Describe,
                    2 => LoadMode::Instance,
                    _ => return Err(Malformed("an unknown load mode")),
                },
            },
            CALL => ToWorker::Call(decode_call(&mut r)?),
            ACK => ToWorker::Ack {
                accepted: r.bool()?,
            },
            _ => return Err(Malformed("an unknown message to the worker")),
        };
        r.end()?;
        Ok(message)
    }
}

/// Encodes a call straight from what the host holds, without building a
/// [`CallMessage`] first.
pub fn encode_call_parts(
    function: u32,
    execution_id: &str,
    params: &[(String, Value)],
    environment: &[(String, String)],
    headers: &[(String, String)],
    deadline_unix_nanos: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_call_into(
        &mut out,
        function,
        execution_id,
        params,
        environment,
        headers,
        None,
        deadline_unix_nanos,
    );
    out
}

/// As [`encode_call_parts`], into `out`'s storage, with the call's
/// `traceparent` (if any) sent as the last header.
#[allow(clippy::too_many_arguments)]
pub fn encode_call_into(
    out: &mut Vec<u8>,
    function: u32,
    execution_id: &str,
    params: &[(String, Value)],
    environment: &[(String, String)],
    headers: &[(String, String)],
    traceparent: Option<&str>,
    deadline_unix_nanos: u64,
) {
    let mut w = Writer::reusing(out);
    w.u8(CALL);
    w.u32(function);
    w.str(execution_id);
    w.u32(u32::try_from(params.len()).unwrap_or(u32::MAX));
    for (name, value) in params {
        w.str(name);
        w.value(value);
    }
    w.pairs(environment);
    match traceparent {
        None => w.pairs(headers),
        Some(traceparent) => w.pairs_and(headers, ("traceparent", traceparent)),
    }
    w.u64(deadline_unix_nanos);
    *out = w.finish();
}

fn encode_call(w: &mut Writer, call: &CallMessage) {
    let bytes = encode_call_parts(
        call.function,
        &call.execution_id,
        &call.params,
        &call.environment,
        &call.headers,
        call.deadline_unix_nanos,
    );
    w.buf.extend_from_slice(&bytes);
}

fn decode_call(r: &mut Reader<'_>) -> Decoded<CallMessage> {
    let function = r.u32()?;
    let execution_id = r.string()?;
    let n = r.count(9)?;
    let mut params = Vec::with_capacity(n);
    for _ in 0..n {
        params.push((r.string()?, r.value()?));
    }
    Ok(CallMessage {
        function,
        execution_id,
        params,
        environment: r.pairs()?,
        headers: r.pairs()?,
        deadline_unix_nanos: r.u64()?,
    })
}

const READY: u8 = 1;
const LOADED: u8 = 2;
const REFUSED: u8 = 3;
const INSTANCE_REFUSED: u8 = 4;
const CHUNK: u8 = 5;
const LOG: u8 = 6;
const DONE: u8 = 7;
const PROBED: u8 = 8;

fn level_code(level: LogLevel) -> u8 {
    match level {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error => 4,
    }
}

fn level_of(code: u8) -> Decoded<LogLevel> {
    Ok(match code {
        0 => LogLevel::Trace,
        1 => LogLevel::Debug,
        2 => LogLevel::Info,
        3 => LogLevel::Warn,
        4 => LogLevel::Error,
        _ => return Err(Malformed("an unknown log level")),
    })
}

impl ToHost {
    /// The message's kind, for errors that must not repeat what a worker
    /// chose to write.
    pub fn name(&self) -> &'static str {
        match self {
            ToHost::Ready => "Ready",
            ToHost::Probed => "Probed",
            ToHost::Loaded(_) => "Loaded",
            ToHost::Refused { .. } => "Refused",
            ToHost::InstanceRefused { .. } => "InstanceRefused",
            ToHost::Chunk(_) => "Chunk",
            ToHost::Log(..) => "Log",
            ToHost::Done { .. } => "Done",
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Encodes the message into `out`'s storage.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::reusing(out);
        match self {
            ToHost::Ready => w.u8(READY),
            ToHost::Probed => w.u8(PROBED),
            ToHost::Loaded(d) => encode_description(&mut w, d),
            ToHost::Refused { kind, message } => {
                w.u8(REFUSED);
                w.str(kind);
                w.str(message);
            }
            ToHost::InstanceRefused { code, message } => {
                w.u8(INSTANCE_REFUSED);
                w.str(code);
                w.str(message);
            }
            ToHost::Chunk(v) => {
                w.u8(CHUNK);
                w.value(v);
            }
            ToHost::Log(level, line) => {
                w.u8(LOG);
                w.u8(level_code(*level));
                w.str(line);
            }
            ToHost::Done { end, memory } => encode_done(&mut w, end, *memory),
        }
        *out = w.finish();
    }

    /// Decodes a message.
    ///
    /// # Errors
    ///
    /// [`Malformed`].
    pub fn decode(bytes: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(bytes);
        let message = match r.u8()? {
            READY => ToHost::Ready,
            PROBED => ToHost::Probed,
            LOADED => {
                let (name, version, sdk_version, abi_version) =
                    (r.string()?, r.string()?, r.string()?, r.string()?);
                let root_fields = usize::try_from(r.u64()?)
                    .map_err(|_| Malformed("a field count beyond the address space"))?;
                let n = r.count(26)?;
                let mut functions = Vec::with_capacity(n);
                for _ in 0..n {
                    functions.push(FunctionInfo {
                        name: r.string()?,
                        kind: match r.u8()? {
                            0 => FunctionKind::Unary,
                            1 => FunctionKind::Stream,
                            _ => return Err(Malformed("an unknown function kind")),
                        },
                        description: r.string()?,
                        signature: r.string()?,
                        blocking: r.bool()?,
                    });
                }
                let default_function = match r.u8()? {
                    0 => None,
                    1 => Some(r.u32()? as usize),
                    _ => return Err(Malformed("an unknown default-function tag")),
                };
                ToHost::Loaded(Description {
                    name,
                    version,
                    sdk_version,
                    abi_version,
                    root_fields,
                    functions,
                    default_function,
                })
            }
            REFUSED => ToHost::Refused {
                kind: r.string()?,
                message: r.string()?,
            },
            INSTANCE_REFUSED => ToHost::InstanceRefused {
                code: r.string()?,
                message: r.string()?,
            },
            CHUNK => ToHost::Chunk(r.value()?),
            LOG => ToHost::Log(level_of(r.u8()?)?, r.string()?),
            DONE => {
                let end = match r.u8()? {
                    0 => CallEnd::Returned(r.value()?),
                    1 => CallEnd::Failed {
                        code: r.string()?,
                        message: r.string()?,
                        retriable: r.bool()?,
                    },
                    2 => CallEnd::Panicked {
                        message: r.string()?,
                    },
                    _ => return Err(Malformed("an unknown call ending")),
                };
                let memory = match r.u8()? {
                    0 => None,
                    1 => Some((r.u64()?, r.u64()?)),
                    _ => return Err(Malformed("a memory figure flag that is neither 0 nor 1")),
                };
                ToHost::Done { end, memory }
            }
            _ => return Err(Malformed("an unknown message to the host")),
        };
        r.end()?;
        Ok(message)
    }
}

/// A `Loaded` message: the plugin's description, its function table and
/// default function.
fn encode_description(w: &mut Writer, d: &Description) {
    w.u8(LOADED);
    w.str(&d.name);
    w.str(&d.version);
    w.str(&d.sdk_version);
    w.str(&d.abi_version);
    w.u64(d.root_fields as u64);
    w.u32(u32::try_from(d.functions.len()).unwrap_or(u32::MAX));
    for f in &d.functions {
        w.str(&f.name);
        w.u8(match f.kind {
            FunctionKind::Unary => 0,
            FunctionKind::Stream => 1,
        });
        w.str(&f.description);
        w.str(&f.signature);
        w.u8(u8::from(f.blocking));
    }
    match d.default_function {
        None => w.u8(0),
        Some(index) => {
            w.u8(1);
            w.u32(u32::try_from(index).unwrap_or(u32::MAX));
        }
    }
}

/// A `Done` message: how the call ended, then its memory figures if any.
fn encode_done(w: &mut Writer, end: &CallEnd, memory: Option<(u64, u64)>) {
    w.u8(DONE);
    match end {
        CallEnd::Returned(v) => {
            w.u8(0);
            w.value(v);
        }
        CallEnd::Failed {
            code,
            message,
            retriable,
        } => {
            w.u8(1);
            w.str(code);
            w.str(message);
            w.u8(u8::from(*retriable));
        }
        CallEnd::Panicked { message } => {
            w.u8(2);
            w.str(message);
        }
    }
    match memory {
        None => w.u8(0),
        Some((allocated, peak)) => {
            w.u8(1);
            w.u64(allocated);
            w.u64(peak);
        }
    }
}

#[cfg(test)]
mod tests;
