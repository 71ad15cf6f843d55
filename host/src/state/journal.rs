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
//!
//! Each record is one line of JSON. A task's record is encoded once, by
//! reference to the task, and its bytes serve both the journal line and the
//! database's value ([`Change::Task`]). Only the end of a file can be torn (the
//! write a crash cut short, or a page a power loss left unwritten), so a
//! bad tail is dropped with a warning; a bad line with good records after
//! it is corruption, and the host refuses to start rather than guess.
//!
//! While the journal cannot be folded (see [`Journal::fail`]) it would grow
//! without bound; past its limit, records that add to the state are
//! refused instead ([`Error::JournalFull`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Failure, StoredExecution, StoredTask, TaskRecord};
use crate::error::{Error, Result};

pub(super) const CURRENT: &str = "state.journal";
pub(super) const FOLDING: &str = "state.journal.folding";

/// One change to the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Op {
    PutTask { task: Box<StoredTask> },
    RemoveTask { id: String },
    PutExecution { execution: StoredExecution },
}

/// How [`Op::PutTask`] is written, around the task's record: serde's
/// form of the tagged enum, the tag first.
const PUT_TASK_OPENING: &[u8] = b"{\"op\":\"put_task\",\"task\":";
const PUT_TASK_CLOSING: &[u8] = b"}\n";

/// Room for a task's line, most of which is a few fixed names and two hex
/// digests: one allocation for a typical record.
const TASK_LINE_CAPACITY: usize = 640;

/// A change appended and waiting to be folded.
#[derive(Debug)]
pub(super) enum Change {
    /// A task's record ([`Op::PutTask`]), encoded already: `record` is the
    /// range of `line`, the journal line appended, that holds the task as
    /// the database stores it.
    Task {
        id: String,
        line: Vec<u8>,
        record: Range<usize>,
    },
    /// Any other change, or a task read back from a journal file.
    Op(Op),
}

impl Change {
    /// Whether the record takes something away: such records are accepted
    /// past the journal's limit, so that a deletion stays durable (and
    /// small) while persistence fails.
    fn removes(&self) -> bool {
        matches!(self, Change::Op(Op::RemoveTask { .. }))
    }
}

#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Signalled by the first record of a batch, and by `stop`.
    appended: Condvar,
    /// `tasks.max_journal_bytes`.
    max_bytes: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    file: File,
    pending: Vec<Change>,
    /// When the oldest pending record was appended.
    since: Option<Instant>,
    stopping: bool,
    /// Bytes in the current file.
    current_bytes: u64,
    /// Bytes in the folding file: the batch handed over, until folded.
    folding_bytes: u64,
    /// A failed write may have left part of a line at the end of the
    /// current file: it is cut off before anything else is appended, or a
    /// good record would follow a bad one.
    dirty: bool,
    /// Why the journal cannot be folded, while it cannot.
    failure: Option<Failure>,
}

impl Inner {
    fn bytes(&self) -> u64 {
        self.current_bytes + self.folding_bytes
    }
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

/// What a journal file holds.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Read {
    /// Its records, in order.
    pub(super) ops: Vec<Op>,
    /// Where its torn tail starts, and how many bytes it has.
    pub(super) torn: Option<(u64, u64)>,
    /// Lines that start with zero bytes — pages a power loss left
    /// unwritten, which a file system may leave anywhere among the last
    /// appends, not only at the end: where the first starts, and the bytes
    /// of all of them. Their records were lost with the power, as the last
    /// moments' records may be.
    pub(super) zeroed: Option<(u64, u64)>,
}

/// A bad line with good records after it.
#[derive(Debug, PartialEq)]
pub(super) struct Corrupt {
    pub(super) offset: u64,
    pub(super) reason: String,
}

/// Splits `source` into records, on `\n`. From the first line that is not
/// a record on, if no record follows, everything is a torn tail: a last
/// line with no newline (its write was cut short, and so never
/// acknowledged) or one that does not parse (invalid JSON, invalid UTF-8:
/// a page a power loss left unwritten). A line that is not a record
/// followed by one that is cannot come from a crash, and is [`Corrupt`].
pub(super) fn parse(
    source: impl std::io::Read,
) -> std::io::Result<std::result::Result<Read, Corrupt>> {
    let mut source = BufReader::new(source);
    let mut read = Read::default();
    let mut bad: Option<Corrupt> = None;
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = source.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.first() == Some(&0) {
            read.zeroed.get_or_insert((offset, 0)).1 += n as u64;
            offset += n as u64;
            continue;
        }
        let parsed = match line.strip_suffix(b"\n") {
            Some(record) => serde_json::from_slice::<Op>(record).map_err(|e| e.to_string()),
            None => Err("the line has no newline at its end".to_owned()),
        };
        match parsed {
            Ok(op) => {
                if let Some(corrupt) = bad {
                    return Ok(Err(corrupt));
                }
                read.ops.push(op);
            }
            Err(reason) => {
                bad.get_or_insert(Corrupt { offset, reason });
            }
        }
        offset += n as u64;
    }
    read.torn = bad.map(|b| (b.offset, offset - b.offset));
    Ok(Ok(read))
}

/// The records in `path`, in order; a torn tail is dropped, with a
/// warning naming the file and the bytes dropped.
fn read_ops(path: &Path) -> Result<Vec<Op>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(path, e)),
    };
    match parse(file).map_err(|e| Error::io(path, e))? {
        Ok(read) => {
            if let Some((offset, bytes)) = read.zeroed {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes,
                    "the state journal holds {bytes} byte(s) of zeros from byte {offset} on, pages a power loss left unwritten; the records they held are lost, the rest is kept"
                );
            }
            if let Some((offset, bytes)) = read.torn {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes,
                    "the state journal's last record was torn by a crash; it was never acknowledged, and its {bytes} byte(s) from byte {offset} on are dropped"
                );
            }
            Ok(read.ops)
        }
        Err(Corrupt { offset, reason }) => Err(Error::JournalCorrupt {
            path: path.to_owned(),
            offset,
            reason,
        }),
    }
}

impl Journal {
    /// The journal in `dir`, and what a previous run left in it to fold.
    ///
    /// # Errors
    ///
    /// [`Error::JournalCorrupt`]; [`Error::Io`].
    pub(super) fn open(dir: &Path, max_bytes: u64) -> Result<(Journal, Vec<Op>)> {
        let mut left = read_ops(&dir.join(FOLDING))?;
        left.extend(read_ops(&dir.join(CURRENT))?);
        let journal = Journal {
            dir: dir.to_owned(),
            inner: Mutex::new(Inner {
                file: open_current(dir, false)?,
                pending: Vec::new(),
                since: None,
                stopping: false,
                current_bytes: 0,
                folding_bytes: 0,
                dirty: false,
                failure: None,
            }),
            appended: Condvar::new(),
            max_bytes: AtomicU64::new(max_bytes),
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
        let mut inner = self.lock();
        inner.file = open_current(&self.dir, true)?;
        inner.current_bytes = 0;
        inner.folding_bytes = 0;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the limit past which records are refused while the journal
    /// cannot be folded.
    pub(super) fn set_max_bytes(&self, max_bytes: u64) {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
    }

    /// Appends `op` (one `write`); it is durable against the process dying
    /// when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::JournalFull`] when the journal cannot be folded and `op`
    /// would take it past its limit; [`Error::Io`].
    pub(super) fn append(&self, op: Op) -> Result<()> {
        let mut line = serde_json::to_vec(&op).expect("records are plain data");
        line.push(b'\n');
        self.append_change(Change::Op(op), &line)
    }

    /// Appends a task's record, as [`Op::PutTask`] is written, encoded
    /// once from `task` (nothing copied out of it first).
    ///
    /// # Errors
    ///
    /// As [`Journal::append`].
    pub(super) fn append_task(&self, task: &TaskRecord<'_>) -> Result<()> {
        let mut line = Vec::with_capacity(TASK_LINE_CAPACITY);
        line.extend_from_slice(PUT_TASK_OPENING);
        let start = line.len();
        task.write_json(&mut line);
        let record = start..line.len();
        line.extend_from_slice(PUT_TASK_CLOSING);
        let id = task.id.to_owned();
        self.append_change(Change::Task { id, line, record }, &[])
    }

    /// Writes `change`'s line — its own for a task, else `line` — and
    /// keeps the change for the folder.
    fn append_change(&self, change: Change, line: &[u8]) -> Result<()> {
        let line = match &change {
            Change::Task { line, .. } => line.as_slice(),
            Change::Op(_) => line,
        };
        let mut guard = self.lock();
        if let Some(failure) = guard.failure.as_ref().filter(|_| !change.removes()) {
            let limit = self.max_bytes.load(Ordering::Relaxed);
            if guard.bytes() + line.len() as u64 > limit {
                return Err(Error::JournalFull {
                    bytes: guard.bytes(),
                    limit,
                    reason: failure.error.clone(),
                });
            }
        }
        let inner = &mut *guard;
        if inner.dirty {
            inner
                .file
                .set_len(inner.current_bytes)
                .map_err(|e| Error::io(self.dir.join(CURRENT), e))?;
            inner.dirty = false;
        }
        if let Err(e) = inner.file.write_all(line) {
            inner.dirty = inner.file.set_len(inner.current_bytes).is_err();
            return Err(Error::io(self.dir.join(CURRENT), e));
        }
        inner.current_bytes += line.len() as u64;
        inner.pending.push(change);
        // Only the first record of a batch wakes the folder: it then waits
        // out the batch's linger on its own. Woken once the lock is free,
        // so that it does not wake only to wait for it: the folder finds
        // the record under the lock whenever it looks, woken or not.
        let first = inner.since.is_none();
        inner.since.get_or_insert_with(Instant::now);
        drop(guard);
        if first {
            self.appended.notify_one();
        }
        Ok(())
    }

    /// Waits (up to `linger`) for records, then hands over the batch to
    /// fold, rotating the file so new records go to a fresh one. `None`
    /// once stopping with nothing left.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be rotated: the records stay
    /// pending, handed over by a later call.
    pub(super) fn next_batch(&self, linger: Duration) -> Result<Option<Vec<Change>>> {
        let mut inner = self.lock();
        if inner.pending.is_empty() && !inner.stopping {
            inner = self
                .appended
                .wait_timeout(inner, linger)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // The batch lingers: records appended within `linger` of its first
        // share its fsync.
        if let Some(left) = inner.since.map(|s| linger.saturating_sub(s.elapsed())) {
            if !left.is_zero() {
                inner = self
                    .appended
                    .wait_timeout_while(inner, left, |i| !i.stopping)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        }
        if inner.pending.is_empty() {
            return Ok(if inner.stopping {
                None
            } else {
                Some(Vec::new())
            });
        }
        let (current, folding) = (self.dir.join(CURRENT), self.dir.join(FOLDING));
        std::fs::rename(&current, &folding).map_err(|e| Error::io(&folding, e))?;
        match open_current(&self.dir, false) {
            Ok(file) => inner.file = file,
            Err(e) => {
                // Put the file back, so that appends and the next attempt
                // find it where they expect it.
                if let Err(back) = std::fs::rename(&folding, &current) {
                    tracing::error!(error = %back, path = %folding.display(), "the state journal could not be put back after a failed rotation");
                }
                return Err(e);
            }
        }
        inner.folding_bytes = std::mem::take(&mut inner.current_bytes);
        inner.dirty = false;
        inner.since = None;
        Ok(Some(std::mem::take(&mut inner.pending)))
    }

    /// The batch handed over last is in the database.
    pub(super) fn folded(&self) -> Result<()> {
        self.lock().folding_bytes = 0;
        let folding = self.dir.join(FOLDING);
        std::fs::remove_file(&folding).map_err(|e| Error::io(&folding, e))
    }

    /// One more failed attempt at folding: the journal is failing from now
    /// (or still), and past its limit refuses records. What it is now.
    pub(super) fn fail(&self, error: &Error) -> Failure {
        let mut inner = self.lock();
        let failure = match inner.failure.take() {
            Some(f) => Failure {
                error: error.to_string(),
                attempts: f.attempts + 1,
                ..f
            },
            None => Failure {
                since: SystemTime::now(),
                error: error.to_string(),
                attempts: 1,
            },
        };
        inner.failure = Some(failure.clone());
        failure
    }

    /// A batch was folded: the journal is not failing any more. Whether it
    /// was.
    pub(super) fn recovered(&self) -> bool {
        self.lock().failure.take().is_some()
    }

    /// Why the journal cannot be folded (while it cannot), and the bytes it
    /// holds not folded yet.
    pub(super) fn health(&self) -> (Option<Failure>, u64) {
        let inner = self.lock();
        (inner.failure.clone(), inner.bytes())
    }

    /// Waits up to `pause`, less if asked to stop; whether stopping.
    pub(super) fn pause(&self, pause: Duration) -> bool {
        let inner = self.lock();
        let (inner, _) = self
            .appended
            .wait_timeout_while(inner, pause, |i| !i.stopping)
            .unwrap_or_else(PoisonError::into_inner);
        inner.stopping
    }

    /// Asks the folder to finish what is pending and stop.
    pub(super) fn stop(&self) {
        self.lock().stopping = true;
        self.appended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str) -> Vec<u8> {
        let mut line = serde_json::to_vec(&Op::RemoveTask { id: id.to_owned() }).unwrap();
        line.push(b'\n');
        line
    }

    fn parsed(bytes: &[u8]) -> std::result::Result<Read, Corrupt> {
        parse(bytes).unwrap()
    }

    #[test]
    fn only_a_tail_is_torn_and_its_offset_and_length_are_known() {
        let good = [line("a"), line("b")].concat();
        let ops = vec![
            Op::RemoveTask { id: "a".into() },
            Op::RemoveTask { id: "b".into() },
        ];
        let at = good.len() as u64;
        let tails: [&[u8]; 4] = [
            // A write cut short.
            b"{\"op\":\"remove_ta",
            // Invalid UTF-8, as a page a power loss left half-written.
            b"{\"op\":\"remove_task\",\"id\":\"\xff\xfe",
            // The same, newline and all.
            b"{\"op\":\"remove_task\",\"id\":\"\xff\xfe\"}\n",
            // A whole record but for its newline: never acknowledged.
            b"{\"op\":\"remove_task\",\"id\":\"c\"}",
        ];
        for tail in tails {
            let read = parsed(&[good.as_slice(), tail].concat()).unwrap();
            assert_eq!(read.ops, ops, "{tail:?}");
            assert_eq!(read.torn, Some((at, tail.len() as u64)), "{tail:?}");
        }
        assert_eq!(
            parsed(&good).unwrap(),
            Read {
                ops: ops.clone(),
                torn: None,
                zeroed: None
            },
            "a clean journal has no tail"
        );
        // Pages a power loss left unwritten read as zeros, at the end or
        // among the last appends: their records are lost, the rest kept.
        let zeros = b"\0\0\0\n\0\0\n".as_slice();
        let read = parsed(&[good.as_slice(), zeros, &line("c")].concat()).unwrap();
        assert_eq!(read.ops.len(), 3);
        assert_eq!(read.zeroed, Some((at, zeros.len() as u64)));
        assert_eq!(read.torn, None);
        let read = parsed(&[good.as_slice(), b"\0\0\0\n\0".as_slice()].concat()).unwrap();
        assert_eq!((read.ops, read.zeroed), (ops, Some((at, 5))));
        assert_eq!(parsed(b"").unwrap(), Read::default());
    }

    #[test]
    fn a_task_s_line_and_folded_record_are_what_serde_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, left) = Journal::open(dir.path(), u64::MAX).unwrap();
        assert!(left.is_empty());
        let mut task = StoredTask::example("t-\"1\"");
        task.description = "tab\there, é".into();
        journal.append_task(&task.record()).unwrap();
        journal.append(Op::RemoveTask { id: "t-2".into() }).unwrap();
        let mut expected = serde_json::to_vec(&Op::PutTask {
            task: Box::new(task.clone()),
        })
        .unwrap();
        expected.push(b'\n');
        let lines = [expected.clone(), line("t-2")].concat();
        assert_eq!(std::fs::read(dir.path().join(CURRENT)).unwrap(), lines);
        let batch = journal.next_batch(Duration::ZERO).unwrap().unwrap();
        match batch.as_slice() {
            [Change::Task { id, line, record }, Change::Op(Op::RemoveTask { id: removed })] => {
                assert_eq!((id.as_str(), removed.as_str()), ("t-\"1\"", "t-2"));
                assert_eq!(line, &expected, "the change keeps the line written");
                assert_eq!(&line[record.clone()], super::super::records::encode(&task));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(lines.as_slice()).unwrap().unwrap().ops.len(), 2);
    }

    #[test]
    fn a_bad_line_with_records_after_it_is_corruption_at_its_offset() {
        let first = line("a");
        for bad in [
            &b"{\"op\":\"remove_task\",\"id\":\"\xff\"}\n"[..],
            b"not json\n",
            b"\n",
        ] {
            let journal = [first.as_slice(), bad, &line("b")].concat();
            let corrupt = parsed(&journal).unwrap_err();
            assert_eq!(corrupt.offset, first.len() as u64, "{bad:?}");
            assert!(!corrupt.reason.is_empty());
        }
    }
}
