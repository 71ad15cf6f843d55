//! What survives a restart: the tasks created here and the ASYNC
//! executions accepted here, in an embedded database in the data directory
//! (`<data_dir>/state.redb`, redb: pure Rust, crash-safe, no server).
//!
//! Every write reaches the write-ahead journal (`journal`) before the
//! caller acknowledges what it recorded, so after the process dies — a
//! crash, SIGKILL — every task whose creation was acknowledged is there, and
//! every acknowledged ASYNC execution is either final or reported as ended
//! by the restart. The journal is folded into the database in the
//! background, one fsync per batch: a power loss can take the records of
//! the last moments, never leave the database inconsistent. SYNC and STREAM
//! executions stay in memory only: their caller was answered, or saw the
//! connection drop.
//!
//! A fold that fails (a full disk, a database redb reports an I/O error
//! on) is retried for as long as it fails, with a growing pause; meanwhile
//! [`StateStore::health`] says so, and the journal, which keeps every
//! record, refuses new ones past `tasks.max_journal_bytes`.
//!
//! ASYNC executions are kept as the in-memory store keeps them (the newest
//! `executions.max_records`, for `executions.record_ttl`): the folder
//! removes the others as it runs, and a restart brings back only those,
//! one at a time.
//!
//! The database carries a schema number; one written by a newer spearlet is
//! refused rather than misread, one written by an older one is brought up
//! to date at open.

mod journal;
mod records;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use tokio::sync::watch;

use crate::error::{Error, Result};

pub use records::{
    ArtifactRecord, HexDigest, MembershipRecord, StoredArtifact, StoredExecution, StoredMembership,
    StoredTask, StoredValue, StoredVersion, TaskRecord, VersionRecord,
};

/// The schema this build reads and writes. 2: bytes in records as base64,
/// and the executions indexed by age.
pub const SCHEMA: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("async_executions");
/// Per ASYNC execution, the time it is filed under in
/// [`EXECUTIONS_BY_AGE`]: what finds its entry there when it is written
/// again.
const EXECUTION_AGES: TableDefinition<&str, u64> = TableDefinition::new("async_execution_ages");
/// The ASYNC executions by acceptance (Unix milliseconds, id), oldest
/// first, and whether each has ended: what retention walks, reading no
/// record.
const EXECUTIONS_BY_AGE: TableDefinition<(u64, &str), bool> =
    TableDefinition::new("async_executions_by_age");

/// How long a journal record waits to be folded: records appended within
/// it share one fsync.
const FOLD_EVERY: Duration = Duration::from_millis(50);

/// The pause after a failed fold grows from this...
#[cfg(not(test))]
const RETRY_BASE: Duration = Duration::from_millis(100);
/// ...to this, for as long as folds fail.
#[cfg(not(test))]
const RETRY_CAP: Duration = Duration::from_secs(10);
// Unit tests fail folds by the hundred: they cannot wait seconds for each.
#[cfg(test)]
const RETRY_BASE: Duration = Duration::from_millis(1);
#[cfg(test)]
const RETRY_CAP: Duration = Duration::from_millis(4);

/// How often an idle folder looks for executions past their time to live
/// (a busy one does with each fold).
const PRUNE_IDLE_EVERY: Duration = Duration::from_secs(1);

/// The most executions one transaction removes: a large backlog goes in
/// several, and no fold waits on all of it.
const PRUNE_BATCH: usize = 1024;

/// The file, under the data directory.
pub const FILE: &str = "state.redb";

/// The open database, its journal, and the thread that folds one into the
/// other (stopped, with everything folded, when this is dropped).
#[derive(Debug)]
pub struct StateDb {
    shared: Arc<StateStore>,
    folder: Option<std::thread::JoinHandle<()>>,
}

/// The database and its journal: what [`StateDb`] reads and writes
/// through.
#[derive(Debug)]
pub struct StateStore {
    /// `None` between a failure and the database being opened again.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    opener: Opener,
    journal: journal::Journal,
    /// Set once the executions are restored: from then on the folder keeps
    /// what the in-memory store keeps.
    retention: Mutex<Option<Retention>>,
    report: watch::Sender<FolderReport>,
}

/// Which ASYNC executions are kept: as `[executions]` bounds the in-memory
/// store, so that a restart brings back what was there before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this many.
    pub max_records: usize,
    /// Accepted within this long.
    pub ttl: Duration,
}

/// Why the journal cannot be folded into the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The first failure of this run of failures.
    pub since: SystemTime,
    /// The last one.
    pub error: String,
    /// Failed attempts in a row.
    pub attempts: u64,
}

/// Whether what is recorded reaches the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// It does: the journal is folded as it fills.
    Ok,
    /// Folding (or rotating) the journal has failed since `since`,
    /// `attempts` times in a row, last with `error`, and is retried. Every
    /// record acknowledged is in the journal, which holds `journal_bytes`;
    /// past its limit, records that add to the state are refused.
    Failing {
        since: SystemTime,
        error: String,
        attempts: u64,
        journal_bytes: u64,
    },
}

impl Persistence {
    /// Whether it is [`Persistence::Failing`].
    pub fn is_failing(&self) -> bool {
        matches!(self, Persistence::Failing { .. })
    }
}

/// What the folder thread has done since the store opened, to wait on (see
/// [`StateStore::subscribe`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderReport {
    /// Why folding fails, while it does.
    pub failure: Option<Failure>,
    /// Batches folded into the database.
    pub folded: u64,
    /// ASYNC executions removed as they fell out of the retention.
    pub pruned: u64,
}

/// What [`StateStore::restore_executions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Executions handed back.
    pub restored: usize,
    /// Executions removed: past the retention.
    pub removed: usize,
}

/// Opens the database file.
type Open = dyn Fn(&Path) -> std::result::Result<Database, redb::DatabaseError> + Send + Sync;

/// How the database file is opened: once at start, again after a failure.
struct Opener(Box<Open>);

impl Opener {
    fn file() -> Opener {
        Opener(Box::new(|path| Database::create(path)))
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener")
    }
}

impl std::ops::Deref for StateDb {
    type Target = StateStore;

    fn deref(&self) -> &StateStore {
        &self.shared
    }
}

impl Drop for StateDb {
    fn drop(&mut self) {
        self.shared.journal.stop();
        if let Some(folder) = self.folder.take() {
            let _ = folder.join();
        }
    }
}

impl StateDb {
    /// Opens (or creates) the database in `data_dir`, and folds into it what
    /// the last run left in the journal.
    ///
    /// # Errors
    ///
    /// [`Error::StateSchema`] when a newer spearlet wrote it;
    /// [`Error::JournalCorrupt`] when the journal holds a bad record before
    /// good ones; [`Error::State`] when it cannot be opened (another
    /// process holds it, or it is not a database).
    pub fn open(data_dir: &Path) -> Result<StateDb> {
        StateDb::open_using(data_dir, Opener::file())
    }

    fn open_using(data_dir: &Path, opener: Opener) -> Result<StateDb> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        let path = data_dir.join(FILE);
        let db = (opener.0)(&path).map_err(|e| state_error(&path, "open", &e))?;
        check_schema(&db).map_err(|e| match e {
            Checked::Newer(found) => Error::StateSchema {
                path: path.clone(),
                found,
                supported: SCHEMA,
            },
            Checked::Failed(e) => state_error(&path, "check the schema", &e),
        })?;
        let max_bytes = crate::config::TasksConfig::default().max_journal_bytes;
        let (journal, left) = journal::Journal::open(data_dir, max_bytes)?;
        let shared = StateStore {
            db: RwLock::new(Some(db)),
            path,
            opener,
            journal,
            retention: Mutex::new(None),
            report: watch::channel(FolderReport::default()).0,
        };
        if !left.is_empty() {
            tracing::info!(
                records = left.len(),
                "folding what the last run left in the journal"
            );
            let left: Vec<journal::Change> = left.into_iter().map(journal::Change::Op).collect();
            shared.apply(&left, None)?;
        }
        shared.journal.replayed()?;
        let shared = Arc::new(shared);
        let folding = Arc::clone(&shared);
        let folder = std::thread::Builder::new()
            .name("state-journal".to_owned())
            .spawn(move || folding.fold_until_stopped())
            .map_err(Error::background("starting the state journal's thread"))?;
        Ok(StateDb {
            shared,
            folder: Some(folder),
        })
    }
}

/// Why [`check_schema`] refused.
enum Checked {
    Newer(u64),
    Failed(redb::Error),
}

impl<E: Into<redb::Error>> From<E> for Checked {
    fn from(e: E) -> Self {
        Checked::Failed(e.into())
    }
}

/// Refuses a database of a newer schema; brings one of an older schema up
/// to this one; writes the schema into a new one.
fn check_schema(db: &Database) -> std::result::Result<(), Checked> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta.get("schema")?.map(|v| v.value());
        match found {
            Some(found) if found > SCHEMA => return Err(Checked::Newer(found)),
            Some(SCHEMA) => {}
            Some(older) => {
                let indexed = index_executions(&txn)?;
                meta.insert("schema", SCHEMA)?;
                tracing::info!(
                    from = older,
                    to = SCHEMA,
                    executions = indexed,
                    "the state database is brought up to this release's schema"
                );
            }
            None => {
                meta.insert("schema", SCHEMA)?;
            }
        }
        txn.open_table(TASKS)?;
        Tables::open(&txn)?;
    }
    txn.commit()?;
    Ok(())
}

/// Schema 1 to 2: files every execution by age. One that cannot be read is
/// filed as the oldest, ended: the first retention removes it.
fn index_executions(txn: &WriteTransaction) -> std::result::Result<usize, redb::Error> {
    #[derive(serde::Deserialize)]
    struct Filed {
        accepted_at: u64,
        status: Option<String>,
    }
    let mut tables = Tables::open(txn)?;
    let mut indexed = 0;
    for entry in tables.records.iter()? {
        let (id, record) = entry?;
        let id = id.value();
        let (accepted_at, ended) = match serde_json::from_slice::<Filed>(record.value()) {
            Ok(filed) => (filed.accepted_at, filed.status.is_some()),
            Err(e) => {
                tracing::warn!(execution = id, error = %e, "a stored execution cannot be read; it goes with the first retention");
                (0, true)
            }
        };
        tables.ages.insert(id, accepted_at)?;
        tables.by_age.insert((accepted_at, id), ended)?;
        indexed += 1;
    }
    Ok(indexed)
}

/// The tables of the ASYNC executions, in one write transaction.
struct Tables<'txn> {
    records: redb::Table<'txn, &'static str, &'static [u8]>,
    ages: redb::Table<'txn, &'static str, u64>,
    by_age: redb::Table<'txn, (u64, &'static str), bool>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> std::result::Result<Self, redb::TableError> {
        Ok(Tables {
            records: txn.open_table(EXECUTIONS)?,
            ages: txn.open_table(EXECUTION_AGES)?,
            by_age: txn.open_table(EXECUTIONS_BY_AGE)?,
        })
    }

    fn put(&mut self, execution: &StoredExecution) -> std::result::Result<(), redb::StorageError> {
        let (id, at) = (execution.id.as_str(), execution.accepted_at);
        self.records
            .insert(id, records::encode(execution).as_slice())?;
        let before = self.ages.insert(id, at)?.map(|v| v.value());
        if let Some(before) = before.filter(|b| *b != at) {
            self.by_age.remove((before, id))?;
        }
        self.by_age.insert((at, id), execution.status.is_some())?;
        Ok(())
    }

    /// Removes up to [`PRUNE_BATCH`] executions past `retention` (see
    /// [`victims`]); how many.
    fn prune(
        &mut self,
        retention: Retention,
        now: u64,
        ended_only: bool,
    ) -> std::result::Result<usize, redb::StorageError> {
        let victims = victims(&self.by_age, retention, now, ended_only)?;
        for (at, id) in &victims {
            self.by_age.remove((*at, id.as_str()))?;
            self.ages.remove(id.as_str())?;
            self.records.remove(id.as_str())?;
        }
        Ok(victims.len())
    }
}

/// The executions `retention` drops at `now` (Unix milliseconds), oldest
/// first, at most [`PRUNE_BATCH`]: those accepted longer than its time to
/// live ago, and the oldest beyond its count. With `ended_only`, as the
/// in-memory store does, one still running is kept whatever its age.
fn victims(
    by_age: &impl ReadableTable<(u64, &'static str), bool>,
    retention: Retention,
    now: u64,
    ended_only: bool,
) -> std::result::Result<Vec<(u64, String)>, redb::StorageError> {
    let cutoff = now.saturating_sub(millis(retention.ttl));
    let held = usize::try_from(by_age.len()?).unwrap_or(usize::MAX);
    let mut over = held.saturating_sub(retention.max_records);
    let mut out = Vec::new();
    for entry in by_age.iter()? {
        if out.len() == PRUNE_BATCH {
            break;
        }
        let (key, ended) = entry?;
        let (at, id) = key.value();
        if at >= cutoff && over == 0 {
            break;
        }
        if ended.value() || !ended_only {
            out.push((at, id.to_owned()));
            over = over.saturating_sub(1);
        }
    }
    Ok(out)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

impl StateStore {
    /// Records a task (a new one, or a new version of one).
    ///
    /// # Errors
    ///
    /// [`Error::JournalFull`]; [`Error::Io`].
    pub fn put_task(&self, task: StoredTask) -> Result<()> {
        self.put_task_record(&task.record())
    }

    /// Records a task from its fields where they are (see [`TaskRecord`]):
    /// what a task's creation writes, one line encoded once, copying
    /// nothing out of the task.
    ///
    /// # Errors
    ///
    /// [`Error::JournalFull`]; [`Error::Io`].
    pub fn put_task_record(&self, task: &TaskRecord<'_>) -> Result<()> {
        self.journal.append_task(task)
    }

    /// Forgets a task. Accepted even when the journal is full: a deletion
    /// must stay deleted.
    ///
    /// # Errors
    ///
    /// [`Error::Io`].
    pub fn remove_task(&self, id: &str) -> Result<()> {
        self.journal
            .append(journal::Op::RemoveTask { id: id.to_owned() })
    }

    /// Every task recorded. One that cannot be read is skipped, with a
    /// warning: the others must still come back.
    ///
    /// # Errors
    ///
    /// [`Error::State`].
    pub fn tasks(&self) -> Result<Vec<StoredTask>> {
        let what = "read the tasks";
        let txn = self.read(what)?;
        let table = txn.open_table(TASKS).map_err(|e| self.error(what, &e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.error(what, &e))? {
            let (key, value) = entry.map_err(|e| self.error(what, &e))?;
            match serde_json::from_slice(value.value()) {
                Ok(item) => out.push(item),
                Err(e) => tracing::warn!(
                    key = key.value(),
                    error = %e,
                    path = %self.path.display(),
                    "a stored entry cannot be read and is skipped"
                ),
            }
        }
        Ok(out)
    }

    /// Records an ASYNC execution (accepted, or ended).
    ///
    /// # Errors
    ///
    /// [`Error::JournalFull`]; [`Error::Io`].
    pub fn put_execution(&self, execution: StoredExecution) -> Result<()> {
        self.journal.append(journal::Op::PutExecution { execution })
    }

    /// Brings back the ASYNC executions recorded, as far as `retention`
    /// keeps them: first removes the others (accepted longer than its time
    /// to live ago, or older than its newest `max_records`, running or
    /// not), then hands each one left to `restore`, oldest first, read one
    /// at a time, so that no more outputs are in memory than `restore`
    /// keeps. From then on the folder applies `retention` as it runs, to
    /// executions that have ended. One that cannot be read is skipped, with
    /// a warning.
    ///
    /// # Errors
    ///
    /// [`Error::State`]; what `restore` returns.
    pub fn restore_executions(
        &self,
        retention: Retention,
        mut restore: impl FnMut(StoredExecution) -> Result<()>,
    ) -> Result<Restored> {
        let what = "restore the executions";
        let now = now_millis();
        let mut done = Restored::default();
        loop {
            let removed = self.prune(retention, now, false)?;
            done.removed += removed;
            if removed < PRUNE_BATCH {
                break;
            }
        }
        let txn = self.read(what)?;
        let e = |e: &dyn std::fmt::Display| self.error(what, e);
        let by_age = txn.open_table(EXECUTIONS_BY_AGE).map_err(|x| e(&x))?;
        let ages = txn.open_table(EXECUTION_AGES).map_err(|x| e(&x))?;
        let records = txn.open_table(EXECUTIONS).map_err(|x| e(&x))?;
        for entry in by_age.iter().map_err(|x| e(&x))? {
            let (key, _) = entry.map_err(|x| e(&x))?;
            let (at, id) = key.value();
            // An entry its execution was filed away from (its first record
            // could not be read) is not its place in the order.
            if ages.get(id).map_err(|x| e(&x))?.map(|v| v.value()) != Some(at) {
                continue;
            }
            let Some(record) = records.get(id).map_err(|x| e(&x))? else {
                continue;
            };
            match serde_json::from_slice(record.value()) {
                Ok(execution) => {
                    done.restored += 1;
                    restore(execution)?;
                }
                Err(error) => tracing::warn!(
                    execution = id,
                    %error,
                    path = %self.path.display(),
                    "a stored execution cannot be read and is skipped"
                ),
            }
        }
        *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(retention);
        Ok(done)
    }

    /// Whether what is recorded reaches the database.
    pub fn health(&self) -> Persistence {
        match self.journal.health() {
            (None, _) => Persistence::Ok,
            (Some(failure), journal_bytes) => Persistence::Failing {
                since: failure.since,
                error: failure.error,
                attempts: failure.attempts,
                journal_bytes,
            },
        }
    }

    /// Bytes in the journal, not folded into the database yet.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.health().1
    }

    /// The folder thread's report, updated as it folds, fails and
    /// recovers: what to wait on rather than poll.
    pub fn subscribe(&self) -> watch::Receiver<FolderReport> {
        self.report.subscribe()
    }

    /// The journal's limit while it cannot be folded
    /// (`tasks.max_journal_bytes`; by default, that setting's default).
    pub fn set_max_journal_bytes(&self, max_bytes: u64) {
        self.journal.set_max_bytes(max_bytes);
    }

    fn read(&self, what: &'static str) -> Result<redb::ReadTransaction> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = db.as_ref().ok_or_else(|| self.closed(what))?;
        db.begin_read().map_err(|e| self.error(what, &e))
    }

    fn write(&self, what: &'static str) -> Result<WriteTransaction> {
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        let db = db.as_ref().ok_or_else(|| self.closed(what))?;
        db.begin_write().map_err(|e| self.error(what, &e))
    }

    /// Writes `ops` in one transaction, with an fsync; with `retention`,
    /// removes in it too the executions that have ended and fallen out of
    /// it. How many it removed.
    fn apply(&self, changes: &[journal::Change], retention: Option<Retention>) -> Result<usize> {
        let what = "fold the journal";
        let txn = self.write(what)?;
        let pruned = (|| -> std::result::Result<usize, redb::Error> {
            let mut tasks = txn.open_table(TASKS)?;
            let mut executions = Tables::open(&txn)?;
            for change in changes {
                match change {
                    journal::Change::Task { id, line, record } => {
                        tasks.insert(id.as_str(), &line[record.clone()])?;
                    }
                    journal::Change::Op(journal::Op::PutTask { task }) => {
                        tasks.insert(task.id.as_str(), records::encode(task).as_slice())?;
                    }
                    journal::Change::Op(journal::Op::RemoveTask { id }) => {
                        tasks.remove(id.as_str())?;
                    }
                    journal::Change::Op(journal::Op::PutExecution { execution }) => {
                        executions.put(execution)?;
                    }
                }
            }
            Ok(match retention {
                Some(retention) => executions.prune(retention, now_millis(), true)?,
                None => 0,
            })
        })()
        .map_err(|e| self.error(what, &e))?;
        txn.commit().map_err(|e| self.error(what, &e))?;
        Ok(pruned)
    }

    /// Removes, in one transaction, up to [`PRUNE_BATCH`] executions past
    /// `retention`; how many.
    fn prune(&self, retention: Retention, now: u64, ended_only: bool) -> Result<usize> {
        let what = "remove the executions past retention";
        let txn = self.write(what)?;
        let removed = Tables::open(&txn)
            .map_err(redb::Error::from)
            .and_then(|mut t| Ok(t.prune(retention, now, ended_only)?))
            .map_err(|e| self.error(what, &e))?;
        if removed == 0 {
            txn.abort().map_err(|e| self.error(what, &e))?;
        } else {
            txn.commit().map_err(|e| self.error(what, &e))?;
        }
        Ok(removed)
    }

    fn retention(&self) -> Option<Retention> {
        *self
            .retention
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The folder thread: batches from the journal into the database until
    /// stopped, and executions out of it as they fall out of the retention.
    /// A batch that cannot be written is retried for as long as it cannot
    /// (its journal file stays, so a restart folds it if the host stops
    /// first).
    fn fold_until_stopped(&self) {
        let mut pruned_at = Instant::now();
        loop {
            let batch = match self.journal.next_batch(FOLD_EVERY) {
                Ok(None) => return,
                Ok(Some(batch)) => batch,
                Err(e) => {
                    // E.g. the data directory is gone. Records stay in the
                    // journal file, and pending.
                    if self.failed(&e, "the state journal cannot rotate; retrying") {
                        return;
                    }
                    continue;
                }
            };
            let retention = self.retention();
            if batch.is_empty() {
                if let Some(retention) =
                    retention.filter(|_| pruned_at.elapsed() >= PRUNE_IDLE_EVERY)
                {
                    pruned_at = Instant::now();
                    match self.prune(retention, now_millis(), true) {
                        Ok(0) => {}
                        Ok(n) => self.report.send_modify(|r| r.pruned += n as u64),
                        Err(e) => {
                            tracing::warn!(error = %e, "executions past retention could not be removed; tried again later")
                        }
                    }
                }
                continue;
            }
            let pruned = loop {
                match self.apply(&batch, retention) {
                    Ok(pruned) => break pruned,
                    Err(e) => {
                        let what = "the state journal cannot be folded into the database; retrying";
                        if self.failed(&e, what) {
                            // Left on disk: the next start folds it.
                            return;
                        }
                        self.reopen();
                    }
                }
            };
            if let Err(e) = self.journal.folded() {
                tracing::warn!(error = %e, "a folded journal file could not be removed; it is folded again at start");
            }
            if self.journal.recovered() {
                tracing::info!("the state journal is folded into the database again");
            }
            self.report.send_modify(|r| {
                r.failure = None;
                r.folded += 1;
                r.pruned += pruned as u64;
            });
        }
    }

    /// Records one more failed attempt of the folder (persistence is
    /// failing until a fold succeeds), reports and logs it, and pauses
    /// before the next: from [`RETRY_BASE`], doubling, up to [`RETRY_CAP`].
    /// Whether the store is stopping instead: what is not folded stays in
    /// the journal's files, for the next start.
    fn failed(&self, e: &Error, what: &str) -> bool {
        let failure = self.journal.fail(e);
        tracing::warn!(error = %e, attempts = failure.attempts, "{what}");
        let attempt = u32::try_from(failure.attempts).unwrap_or(u32::MAX);
        self.report.send_modify(|r| r.failure = Some(failure));
        self.journal
            .pause(crate::backoff::full_jitter(RETRY_BASE, RETRY_CAP, attempt))
    }

    /// Opens the database again: once redb has met an I/O error, it fails
    /// everything until it is.
    fn reopen(&self) {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Closed first: an open database holds the file's lock.
        *db = None;
        match (self.opener.0)(&self.path) {
            Ok(reopened) => *db = Some(reopened),
            Err(e) => {
                tracing::warn!(error = %e, path = %self.path.display(), "the state database cannot be opened again yet");
            }
        }
    }

    fn closed(&self, what: &'static str) -> Error {
        self.error(
            what,
            &"the database is closed after a failure, until it can be opened again",
        )
    }

    fn error(&self, what: &'static str, e: &dyn std::fmt::Display) -> Error {
        state_error(&self.path, what, e)
    }
}

fn state_error(path: &Path, what: &'static str, e: &dyn std::fmt::Display) -> Error {
    Error::State {
        path: path.to_owned(),
        action: what,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::ReadableTableMetadata as _;

    use super::*;

    /// Waits, on the folder's notifications, until its report satisfies
    /// `done`; the deadline only turns a hang into a failure.
    fn wait_for(db: &StateDb, done: impl FnMut(&FolderReport) -> bool) -> FolderReport {
        let mut changes = db.subscribe();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), changes.wait_for(done))
                .await
                .expect("the folder reported it within a minute")
                .expect("the folder runs")
                .clone()
        })
    }

    fn line(op: &journal::Op) -> Vec<u8> {
        let mut line = serde_json::to_vec(op).unwrap();
        line.push(b'\n');
        line
    }

    fn put(task: &StoredTask) -> Vec<u8> {
        line(&journal::Op::PutTask {
            task: Box::new(task.clone()),
        })
    }

    fn ended(id: &str, accepted_at: u64) -> StoredExecution {
        StoredExecution {
            id: id.to_owned(),
            task_id: "t".into(),
            function: "f".into(),
            accepted_at,
            status: Some("completed".into()),
            output: Some(StoredValue::Bytes(id.as_bytes().to_vec())),
            error_code: String::new(),
            error_message: String::new(),
            parameters_hash: 0,
        }
    }

    /// The ids of the executions in the database, by id.
    fn stored_ids(db: &StateDb) -> Vec<String> {
        let txn = db.read("test").unwrap();
        let records = txn.open_table(EXECUTIONS).unwrap();
        let ids = records
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_owned())
            .collect();
        let by_age = txn.open_table(EXECUTIONS_BY_AGE).unwrap();
        let ages = txn.open_table(EXECUTION_AGES).unwrap();
        assert_eq!(
            by_age.len().unwrap(),
            records.len().unwrap(),
            "one entry each"
        );
        assert_eq!(ages.len().unwrap(), records.len().unwrap(), "one age each");
        ids
    }

    #[test]
    fn what_is_written_is_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let task = StoredTask::example("t-1");
        {
            let db = StateDb::open(dir.path()).unwrap();
            db.put_task(task.clone()).unwrap();
            db.put_task(StoredTask::example("t-2")).unwrap();
            db.remove_task("t-2").unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.tasks().unwrap(), [task]);
    }

    #[test]
    fn a_task_is_folded_as_serde_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut task = StoredTask::example("t-\"1\"");
        task.description = "tab\there, é".into();
        let db = StateDb::open(dir.path()).unwrap();
        db.put_task(task.clone()).unwrap();
        wait_for(&db, |r| r.folded == 1);
        let txn = db.read("test").unwrap();
        let stored = txn.open_table(TASKS).unwrap();
        let value = stored.get(task.id.as_str()).unwrap().unwrap();
        assert_eq!(value.value(), records::encode(&task).as_slice());
        assert_eq!(db.tasks().unwrap(), [task]);
    }

    #[test]
    fn what_a_killed_process_left_in_the_journal_is_folded_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateDb::open(dir.path()).unwrap());
        // As a killed process leaves it: records in the journal files, not
        // folded, and a last line the kill cut short.
        let first = StoredTask::example("t-1");
        let second = StoredTask::example("t-2");
        std::fs::write(dir.path().join(journal::FOLDING), put(&first)).unwrap();
        std::fs::write(
            dir.path().join(journal::CURRENT),
            [
                put(&second),
                line(&journal::Op::RemoveTask { id: "t-1".into() }),
                b"{\"op\":\"put_ta".to_vec(),
            ]
            .concat(),
        )
        .unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.tasks().unwrap(),
            [second],
            "in order: put, put, remove; the torn line dropped"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join(journal::CURRENT))
                .unwrap()
                .len(),
            0,
            "folded, then started afresh"
        );
        assert!(!dir.path().join(journal::FOLDING).exists());
    }

    #[test]
    fn a_torn_tail_of_either_journal_file_is_dropped_and_the_rest_folded() {
        let tails: [&[u8]; 3] = [
            b"{\"op\":\"put_task\",\"task\":{\"id\":\"t-",
            // Invalid UTF-8: what `lines()` refused to read at all.
            b"{\"op\":\"put_task\",\"task\":{\"id\":\"\xff\xfe\xfd",
            b"{\"op\":\"put_task\",\"task\":{\"id\":\"\xc3\x28\"}}\n",
        ];
        for file in [journal::FOLDING, journal::CURRENT] {
            for tail in tails {
                let dir = tempfile::tempdir().unwrap();
                drop(StateDb::open(dir.path()).unwrap());
                let kept = StoredTask::example("t-1");
                std::fs::write(dir.path().join(file), [put(&kept), tail.to_vec()].concat())
                    .unwrap();
                let db =
                    StateDb::open(dir.path()).unwrap_or_else(|e| panic!("{file}, {tail:?}: {e}"));
                assert_eq!(db.tasks().unwrap(), [kept], "{file}, {tail:?}");
            }
        }
    }

    #[test]
    fn a_bad_record_before_good_ones_refuses_to_open_naming_the_file_and_offset() {
        for file in [journal::FOLDING, journal::CURRENT] {
            let dir = tempfile::tempdir().unwrap();
            drop(StateDb::open(dir.path()).unwrap());
            let first = put(&StoredTask::example("t-1"));
            let journal = [
                first.clone(),
                b"{\"op\":\"put_task\",\"task\":{\"id\":\"\xff\"}}\n".to_vec(),
                put(&StoredTask::example("t-2")),
            ]
            .concat();
            let path = dir.path().join(file);
            std::fs::write(&path, &journal).unwrap();
            let err = StateDb::open(dir.path()).unwrap_err();
            assert!(
                matches!(&err, Error::JournalCorrupt { path: p, offset, .. }
                    if *p == path && *offset == first.len() as u64),
                "{file}: {err:?}"
            );
            let message = err.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(
                message.contains(&format!("truncate -s {} ", first.len())),
                "{message}"
            );
            assert_eq!(err.kind(), "state_journal_corrupt");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                journal,
                "nothing is dropped before the operator decides"
            );
        }
    }

    #[test]
    fn failing_folds_are_retried_reported_bounded_and_caught_up_when_the_fault_clears() {
        let dir = tempfile::tempdir().unwrap();
        let folding = dir.path().join(journal::FOLDING);
        let mut accepted = Vec::new();
        {
            let db = StateDb::open(dir.path()).unwrap();
            let limit = 8 * 1024;
            db.set_max_journal_bytes(limit);
            // A real fault, even for root: the journal cannot be renamed
            // over a directory, so no batch can be handed to the folder.
            std::fs::create_dir(&folding).unwrap();
            std::fs::write(folding.join("in-the-way"), b"").unwrap();
            let first = StoredTask::example("t-0");
            db.put_task(first.clone()).unwrap();
            accepted.push(first);
            // Past the 50 attempts after which the folder used to give up.
            let report = wait_for(&db, |r| r.failure.as_ref().is_some_and(|f| f.attempts > 60));
            assert_eq!(report.folded, 0);
            match db.health() {
                Persistence::Failing {
                    error,
                    journal_bytes,
                    attempts,
                    ..
                } => {
                    assert!(error.contains(&folding.display().to_string()), "{error}");
                    assert!(attempts > 60);
                    assert_eq!(journal_bytes, put(&accepted[0]).len() as u64);
                }
                Persistence::Ok => panic!("the folds fail"),
            }
            let refused = loop {
                let task = StoredTask::example(&format!("t-{}", accepted.len()));
                match db.put_task(task.clone()) {
                    Ok(()) => accepted.push(task),
                    Err(e) => break e,
                }
                assert!(accepted.len() < 1000, "the journal is bounded");
            };
            assert!(
                matches!(&refused, Error::JournalFull { limit: l, reason, .. }
                    if *l == limit && reason.contains(&folding.display().to_string())),
                "{refused:?}"
            );
            assert!(refused.to_string().contains("tasks.max_journal_bytes"));
            let held = db.journal_bytes();
            assert!(held <= limit && held + put(&accepted[0]).len() as u64 > limit);
            db.remove_task("t-1")
                .expect("a deletion is accepted past the limit");
            accepted.retain(|t| t.id != "t-1");

            std::fs::remove_dir_all(&folding).unwrap();
            let report = wait_for(&db, |r| r.failure.is_none());
            assert_eq!(report.folded, 1, "everything pending, in one batch");
            assert_eq!(db.health(), Persistence::Ok);
            assert_eq!(db.journal_bytes(), 0);
            db.put_task(StoredTask::example("after"))
                .expect("accepted again");
            accepted.push(StoredTask::example("after"));
        }
        let db = StateDb::open(dir.path()).unwrap();
        let mut tasks = db.tasks().unwrap();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        accepted.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(tasks, accepted, "every record acknowledged, none refused");
    }

    /// A file that fails every write and sync while `fail` is set, as a
    /// full disk does.
    #[derive(Debug)]
    struct FailingDisk {
        file: redb::backends::FileBackend,
        fail: Arc<AtomicBool>,
    }

    impl FailingDisk {
        fn check(&self) -> std::result::Result<(), std::io::Error> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for FailingDisk {
        fn len(&self) -> std::result::Result<u64, std::io::Error> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), std::io::Error> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::result::Result<(), std::io::Error> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::result::Result<(), std::io::Error> {
            self.check()?;
            self.file.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), std::io::Error> {
            self.check()?;
            self.file.write(offset, data)
        }
        fn close(&self) -> std::result::Result<(), std::io::Error> {
            self.file.close()
        }
        fn try_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> std::result::Result<bool, redb::BackendError> {
            self.file.try_lock_range(start, end)
        }
        fn try_lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> std::result::Result<bool, redb::BackendError> {
            self.file.try_lock_shared_range(start, end)
        }
        fn lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> std::result::Result<(), redb::BackendError> {
            self.file.lock_range(start, end)
        }
        fn lock_shared_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> std::result::Result<(), redb::BackendError> {
            self.file.lock_shared_range(start, end)
        }
        fn unlock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> std::result::Result<(), redb::BackendError> {
            self.file.unlock_range(start, end)
        }
        fn query_lock_range(
            &self,
            start: std::ops::Bound<u64>,
            end: std::ops::Bound<u64>,
        ) -> std::result::Result<bool, redb::BackendError> {
            self.file.query_lock_range(start, end)
        }
    }

    #[test]
    fn a_database_that_failed_a_write_is_opened_again_and_folded_into() {
        let dir = tempfile::tempdir().unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let disk = Arc::clone(&fail);
        let opener = Opener(Box::new(move |path| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            Database::builder().create_with_backend(FailingDisk {
                file: redb::backends::FileBackend::new(file)?,
                fail: Arc::clone(&disk),
            })
        }));
        {
            let db = StateDb::open_using(dir.path(), opener).unwrap();
            db.put_task(StoredTask::example("t-1")).unwrap();
            wait_for(&db, |r| r.folded == 1);
            fail.store(true, Ordering::SeqCst);
            db.put_task(StoredTask::example("t-2")).unwrap();
            // redb fails everything after an I/O error until the database
            // is opened again; this one cannot be, while the disk fails.
            wait_for(&db, |r| r.failure.as_ref().is_some_and(|f| f.attempts > 5));
            assert!(db.health().is_failing());
            fail.store(false, Ordering::SeqCst);
            let report = wait_for(&db, |r| r.failure.is_none());
            assert_eq!(report.folded, 2);
            assert_eq!(db.tasks().unwrap().len(), 2);
        }
        let db = StateDb::open(dir.path()).unwrap();
        let ids: Vec<String> = db.tasks().unwrap().into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["t-1", "t-2"]);
    }

    #[test]
    fn executions_are_restored_oldest_first_within_retention_and_the_rest_removed() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_millis();
        let hour = 3_600_000;
        {
            let db = StateDb::open(dir.path()).unwrap();
            db.put_execution(ended("expired", now - 2 * hour)).unwrap();
            for (n, id) in ["e-1", "e-2", "e-3", "e-4"].into_iter().enumerate() {
                db.put_execution(ended(id, now - hour / 2 + n as u64))
                    .unwrap();
            }
            let mut running = ended("running", now - hour / 4);
            running.status = None;
            running.output = None;
            db.put_execution(running.clone()).unwrap();
            // Ended later: filed under its new time, not twice.
            running.accepted_at += 1;
            db.put_execution(running).unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        let retention = Retention {
            max_records: 3,
            ttl: Duration::from_secs(3600),
        };
        let mut restored = Vec::new();
        let done = db
            .restore_executions(retention, |e| {
                restored.push(e.id);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            restored,
            ["e-3", "e-4", "running"],
            "the newest 3, oldest first"
        );
        assert_eq!(
            done,
            Restored {
                restored: 3,
                removed: 3
            }
        );
        let mut ids = stored_ids(&db);
        ids.sort();
        assert_eq!(ids, ["e-3", "e-4", "running"], "the rest are removed");
    }

    #[test]
    fn ended_executions_past_retention_are_removed_as_the_store_runs() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        let retention = Retention {
            max_records: 2,
            ttl: Duration::from_secs(3600),
        };
        db.restore_executions(retention, |_| Ok(())).unwrap();
        let now = now_millis();
        let mut running = ended("running-for-ages", 1);
        running.status = None;
        db.put_execution(running).unwrap();
        db.put_execution(ended("expired", 2)).unwrap();
        for (n, id) in ["e-1", "e-2", "e-3", "e-4"].into_iter().enumerate() {
            db.put_execution(ended(id, now + n as u64)).unwrap();
        }
        let report = wait_for(&db, |r| r.pruned >= 4);
        assert_eq!(report.pruned, 4);
        let mut ids = stored_ids(&db);
        ids.sort();
        assert_eq!(
            ids,
            ["e-4", "running-for-ages"],
            "the newest 2; one still running stays, as in memory"
        );
    }

    #[test]
    fn a_database_of_schema_1_is_brought_up_to_date_and_its_records_read() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_millis();
        let old = format!(
            r#"{{"id":"e-1","task_id":"t-1","function":"f","accepted_at":{now},
            "status":"completed","output":{{"type":"bytes","value":[1,2,3]}},
            "error_code":"","error_message":""}}"#
        );
        {
            // As the release before wrote it: no index, bytes as arrays.
            let db = Database::create(dir.path().join(FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema", 1).unwrap();
            txn.open_table(TASKS)
                .unwrap()
                .insert(
                    "t-1",
                    records::encode(&StoredTask::example("t-1")).as_slice(),
                )
                .unwrap();
            let mut executions = txn.open_table(EXECUTIONS).unwrap();
            executions.insert("e-1", old.as_bytes()).unwrap();
            executions.insert("unreadable", b"{".as_slice()).unwrap();
            drop(executions);
            txn.commit().unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.tasks().unwrap(), [StoredTask::example("t-1")]);
        let mut restored = Vec::new();
        let done = db
            .restore_executions(
                Retention {
                    max_records: 10,
                    ttl: Duration::from_secs(60),
                },
                |e| {
                    restored.push(e);
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(done.removed, 1, "the unreadable one, filed as the oldest");
        let mut expected = ended("e-1", now);
        expected.task_id = "t-1".into();
        expected.output = Some(StoredValue::Bytes(vec![1, 2, 3]));
        assert_eq!(restored, [expected]);
        let txn = db.read("test").unwrap();
        let schema = txn
            .open_table(META)
            .unwrap()
            .get("schema")
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(schema, SCHEMA);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            let txn = db.write("test").unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema", SCHEMA + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = StateDb::open(dir.path()).unwrap_err();
        assert!(
            matches!(err, Error::StateSchema { found, supported, .. } if found == SCHEMA + 1 && supported == SCHEMA),
            "{err}"
        );
        assert!(err.to_string().contains("newer spearlet"), "{err}");
    }
}
