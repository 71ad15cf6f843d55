//! The process tier: a task's plugin in worker processes of its own, called
//! across shared memory, so that a crash costs one worker and never the host.
//!
//! `docs/isolation.md` describes the tiers and what each costs.

use std::fmt;
use std::str::FromStr;

/// Invocation metadata key choosing a task's tier on NEW_TASK.
pub const ISOLATION_KEY: &str = "spearlet.isolation";

/// Where a task's plugin code runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// In the host process: inline when proven short, else on pooled threads.
    #[default]
    InProcess,
    /// In worker processes, across shared memory.
    Process,
}

impl Isolation {
    /// Its name on the wire, in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a tier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an isolation tier (expected `in-process` or `process`)")]
pub struct UnknownIsolation(pub String);

impl FromStr for Isolation {
    type Err = UnknownIsolation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "in-process" => Ok(Isolation::InProcess),
            "process" => Ok(Isolation::Process),
            other => Err(UnknownIsolation(other.to_owned())),
        }
    }
}

/// Identifies the channel protocol this build speaks: a hash of the code
/// that defines it. A worker program from another build (a stale binary
/// beside a rebuilt host) refuses to serve, and says so, instead of
/// misreading messages.
pub(crate) const PROTOCOL: u64 = fnv1a(&[
    include_bytes!("codec/mod.rs"),
    include_bytes!("codec/wire.rs"),
    include_bytes!("shm.rs"),
    include_bytes!("wake.rs"),
    include_bytes!("worker.rs"),
]);

/// FNV-1a over `parts`, at compile time.
const fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut p = 0;
    while p < parts.len() {
        let bytes = parts[p];
        let mut i = 0;
        while i < bytes.len() {
            hash ^= bytes[i] as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        p += 1;
    }
    hash
}

mod codec;
mod instance;
mod process;
#[allow(unsafe_code)]
mod shm;
mod wake;
pub mod worker;
mod workers;

pub use instance::{CrashGate, IsolatedInstance};
pub use process::{Ended, GRACE};
pub use wake::counts as wake_counts;
pub use workers::{worker_program, Workers, LOAD_PATIENCE};

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use crate::digest::Sha256Digest;
use crate::error::Result;
use crate::loader::{Plugin, VerifiedFile};

/// Digests whose first load ran in a worker and did not kill it: the host
/// may map them itself.
static PROBED: LazyLock<Mutex<HashSet<Sha256Digest>>> = LazyLock::new(Mutex::default);

/// The plugin in the verified `file`, described by a worker process and
/// never mapped here: what a process-tier task runs. The worker the
/// description used is replaced. Blocks.
///
/// # Errors
///
/// The loader's refusals (from the worker), [`crate::Error::ConstructorCrashed`],
/// [`crate::Error::Worker`].
pub fn describe(file: VerifiedFile, workers: &Workers) -> Result<Arc<Plugin>> {
    let described = workers
        .describe(&file)
        .and_then(|description| Plugin::described(file, description));
    workers.prestart();
    described
}

/// Loads the verified `file` into this process, its first load in a
/// worker process: a library whose ELF constructor crashes or hangs is
/// refused ([`crate::Error::ConstructorCrashed`]) before the host maps it.
/// (A process-tier task's plugin is only described: [`describe`].) Blocks.
///
/// # Errors
///
/// The loader's refusals, [`crate::Error::ConstructorCrashed`],
/// [`crate::Error::Worker`].
pub fn load_in_process(file: VerifiedFile, workers: &Workers) -> Result<Arc<Plugin>> {
    let digest = file.digest();
    if let Some(plugin) = Plugin::already_loaded(&digest) {
        return Ok(plugin);
    }
    let probed = PROBED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .contains(&digest);
    if !probed {
        match workers.probe(&file) {
            // A refusal the loader here will give again, with its details.
            Ok(()) | Err(crate::Error::RefusedByWorker { .. }) => {}
            Err(e) => {
                workers.prestart();
                return Err(e);
            }
        }
        PROBED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest);
    }
    let loaded = Plugin::load(file);
    // The worker the first load used is replaced now that the load is done.
    workers.prestart();
    loaded
}
