//! The write-ahead journal in front of the database: a record is appended
//! with one `write` (in the kernel's page cache, it survives the process
//! being killed) and acknowledged; a background thread folds what was
//! appended into the database in batches, one fsync per batch, so a power
//! loss can take at most the batch being folded. At open, whatever a crash
//! left in the journal is folded first.
//!
//! The journal is `state.journal`; while a batch is folded it is renamed
//! `state.journal.folding` and a fresh `state.journal` takes new records,
//! so replay order is: the folding file, then the current one.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{StoredExecution, StoredTask};
use crate::error::{Error, Result};

const CURRENT: &str = "state.journal";
const FOLDING: &str = "state.journal.folding";

/// One change to the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Op {
    PutTask { task: StoredTask },
    RemoveTask { id: String },
    PutExecution { execution: StoredExecution },
}

#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    inner: Mutex<Inner>,
    appended: Condvar,
}

#[derive(Debug)]
struct Inner {
    file: File,
    pending: Vec<Op>,
    /// When the oldest pending record was appended.
    since: Option<std::time::Instant>,
    stopping: bool,
}

fn open_current(dir: &Path, truncate: bool) -> Result<File> {
    let path = dir.join(CURRENT);
    OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .open(&path)
        .and_then(|f| {
            if truncate {
                f.set_len(0)?;
            }
            Ok(f)
        })
        .map_err(|e| Error::io(&path, e))
}

/// The records in `path`, in order; a last line a crash cut short is
/// dropped (it was never acknowledged).
fn read_ops(path: &Path) -> Result<Vec<Op>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut ops = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        match serde_json::from_str(&line) {
            Ok(op) => ops.push(op),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "a journal line cut short by a crash is dropped")
            }
        }
    }
    Ok(ops)
}

impl Journal {
    /// The journal in `dir`, and what a previous run left in it to fold.
    pub(super) fn open(dir: &Path) -> Result<(Journal, Vec<Op>)> {
        let mut left = read_ops(&dir.join(FOLDING))?;
        left.extend(read_ops(&dir.join(CURRENT))?);
        let journal = Journal {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                file: open_current(dir, false)?,
                pending: Vec::new(),
                since: None,
                stopping: false,
            }),
            appended: Condvar::new(),
        };
        Ok((journal, left))
    }

    /// After what `open` returned is in the database: starts afresh.
    pub(super) fn replayed(&self) -> Result<()> {
        let folding = self.dir.join(FOLDING);
        match std::fs::remove_file(&folding) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&folding, e)),
        }
        self.lock().file = open_current(&self.dir, true)?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `op` (one `write`); it is durable against the process dying
    /// when this returns.
    pub(super) fn append(&self, op: Op) -> Result<()> {
        let mut line = serde_json::to_vec(&op).expect("records are plain data");
        line.push(b'\n');
        let mut inner = self.lock();
        let path = self.dir.join(CURRENT);
        inner
            .file
            .write_all(&line)
            .map_err(|e| Error::io(&path, e))?;
        inner.pending.push(op);
        // Only the first record of a batch wakes the folder: it then waits
        // out the batch's linger on its own.
        let first = inner.since.is_none();
        inner.since.get_or_insert_with(std::time::Instant::now);
        drop(inner);
        if first {
            self.appended.notify_one();
        }
        Ok(())
    }

    /// Waits (up to `linger`) for records, then hands over the batch to
    /// fold, rotating the file so new records go to a fresh one. `None`
    /// once stopping with nothing left.
    pub(super) fn next_batch(&self, linger: Duration) -> Result<Option<Vec<Op>>> {
        let mut inner = self.lock();
        if inner.pending.is_empty() && !inner.stopping {
            inner = self
                .appended
                .wait_timeout(inner, linger)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if inner.pending.is_empty() {
            return Ok(if inner.stopping {
                None
            } else {
                Some(Vec::new())
            });
        }
        let (current, folding) = (self.dir.join(CURRENT), self.dir.join(FOLDING));
        std::fs::rename(&current, &folding).map_err(|e| Error::io(&current, e))?;
        inner.file = open_current(&self.dir, false)?;
        Ok(Some(std::mem::take(&mut inner.pending)))
    }

    /// The batch handed over last is in the database.
    pub(super) fn folded(&self) -> Result<()> {
        let folding = self.dir.join(FOLDING);
        std::fs::remove_file(&folding).map_err(|e| Error::io(&folding, e))
    }

    /// Whether [`Journal::stop`] was called.
    pub(super) fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Asks the folder to finish what is pending and stop.
    pub(super) fn stop(&self) {
        self.lock().stopping = true;
        self.appended.notify_all();
    }
}
