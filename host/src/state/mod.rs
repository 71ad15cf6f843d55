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
//! The database carries a schema number; one written by a newer spearlet is
//! refused rather than misread.

mod journal;
mod records;

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};

pub use records::{StoredArtifact, StoredExecution, StoredMembership, StoredTask, StoredValue};

/// The schema this build reads and writes.
pub const SCHEMA: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("async_executions");

/// How long a journal record waits to be folded: records appended within
/// it share one fsync.
const FOLD_EVERY: Duration = Duration::from_millis(50);

/// The file, under the data directory.
pub const FILE: &str = "state.redb";

/// The open database, its journal, and the thread that folds one into the
/// other (stopped, with everything folded, when this is dropped).
#[derive(Debug)]
pub struct StateDb {
    shared: std::sync::Arc<StateStore>,
    folder: Option<std::thread::JoinHandle<()>>,
}

/// The database and its journal: what [`StateDb`] reads and writes
/// through.
#[derive(Debug)]
pub struct StateStore {
    db: Database,
    path: PathBuf,
    journal: journal::Journal,
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
    /// Opens (or creates) the database in `data_dir`.
    ///
    /// # Errors
    ///
    /// [`Error::StateSchema`] when a newer spearlet wrote it;
    /// [`Error::State`] when it cannot be opened (another process holds
    /// it, or it is not a database).
    pub fn open(data_dir: &Path) -> Result<StateDb> {
        std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
        let path = data_dir.join(FILE);
        let db = Database::create(&path).map_err(|e| state_error(&path, "open", &e))?;
        let (journal, left) = journal::Journal::open(data_dir)?;
        let shared = StateStore { db, path, journal };
        shared.check_schema()?;
        if !left.is_empty() {
            tracing::info!(
                records = left.len(),
                "folding what the last run left in the journal"
            );
            shared.apply(&left)?;
        }
        shared.journal.replayed()?;
        let shared = std::sync::Arc::new(shared);
        let folding = std::sync::Arc::clone(&shared);
        let folder = std::thread::Builder::new()
            .name("state-journal".to_owned())
            .spawn(move || folding.fold_until_stopped())
            .map_err(|e| {
                Error::Internal(format!("cannot start the state journal's thread: {e}"))
            })?;
        Ok(StateDb {
            shared,
            folder: Some(folder),
        })
    }
}

impl StateStore {
    fn check_schema(&self) -> Result<()> {
        let txn = self.write("check the schema")?;
        {
            let mut meta = txn
                .open_table(META)
                .map_err(|e| self.error("check the schema", &e))?;
            let found = meta
                .get("schema")
                .map_err(|e| self.error("check the schema", &e))?
                .map(|v| v.value());
            match found {
                Some(found) if found > SCHEMA => {
                    return Err(Error::StateSchema {
                        path: self.path.clone(),
                        found,
                        supported: SCHEMA,
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("schema", SCHEMA)
                        .map_err(|e| self.error("write the schema", &e))?;
                }
            }
            txn.open_table(TASKS)
                .map_err(|e| self.error("create the tables", &e))?;
            txn.open_table(EXECUTIONS)
                .map_err(|e| self.error("create the tables", &e))?;
        }
        txn.commit().map_err(|e| self.error("check the schema", &e))
    }

    /// Records a task (a new one, or a new version of one).
    ///
    /// # Errors
    ///
    /// [`Error::State`].
    pub fn put_task(&self, task: StoredTask) -> Result<()> {
        self.journal.append(journal::Op::PutTask { task })
    }

    /// Forgets a task.
    ///
    /// # Errors
    ///
    /// [`Error::State`].
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
        self.all(TASKS, "read the tasks")
    }

    /// Records an ASYNC execution (accepted, or ended).
    ///
    /// # Errors
    ///
    /// [`Error::State`].
    pub fn put_execution(&self, execution: StoredExecution) -> Result<()> {
        self.journal.append(journal::Op::PutExecution { execution })
    }

    /// Forgets ASYNC executions.
    ///
    /// # Errors
    ///
    /// [`Error::State`].
    pub fn remove_executions<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let what = "forget executions";
        let txn = self.write(what)?;
        {
            let mut table = txn
                .open_table(EXECUTIONS)
                .map_err(|e| self.error(what, &e))?;
            for id in ids {
                table.remove(id).map_err(|e| self.error(what, &e))?;
            }
        }
        txn.commit().map_err(|e| self.error(what, &e))
    }

    /// Every ASYNC execution recorded.
    ///
    /// # Errors
    ///
    /// [`Error::State`].
    pub fn executions(&self) -> Result<Vec<StoredExecution>> {
        self.all(EXECUTIONS, "read the executions")
    }

    fn write(&self, what: &'static str) -> Result<redb::WriteTransaction> {
        self.db.begin_write().map_err(|e| self.error(what, &e))
    }

    /// Writes `ops` in one transaction, with an fsync.
    fn apply(&self, ops: &[journal::Op]) -> Result<()> {
        let what = "fold the journal";
        let txn = self.write(what)?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.error(what, &e))?;
            let mut executions = txn
                .open_table(EXECUTIONS)
                .map_err(|e| self.error(what, &e))?;
            for op in ops {
                let done = match op {
                    journal::Op::PutTask { task } => tasks
                        .insert(task.id.as_str(), records::encode(task).as_slice())
                        .map(drop),
                    journal::Op::RemoveTask { id } => tasks.remove(id.as_str()).map(drop),
                    journal::Op::PutExecution { execution } => executions
                        .insert(execution.id.as_str(), records::encode(execution).as_slice())
                        .map(drop),
                };
                done.map_err(|e| self.error(what, &e))?;
            }
        }
        txn.commit().map_err(|e| self.error(what, &e))
    }

    /// The folder thread: batches from the journal into the database until
    /// stopped. A batch that cannot be written is retried (its journal
    /// file stays, so a restart folds it if this never succeeds).
    fn fold_until_stopped(&self) {
        let mut failures = 0u32;
        loop {
            let batch = match self.journal.next_batch(FOLD_EVERY) {
                Ok(None) => return,
                Ok(Some(batch)) => batch,
                Err(e) => {
                    // E.g. the data directory is gone. Records stay in the
                    // journal file, folded at the next start if it is back.
                    if self.give_up(&mut failures, &e, "the state journal cannot rotate") {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            loop {
                match self.apply(&batch) {
                    Ok(()) => break,
                    Err(e) => {
                        let what = "the state journal cannot be folded; retrying";
                        if self.give_up(&mut failures, &e, what) {
                            // Left on disk: the next start folds it.
                            return;
                        }
                    }
                }
            }
            failures = 0;
            if let Err(e) = self.journal.folded() {
                tracing::warn!(error = %e, "a folded journal file could not be removed; it is folded again at start");
            }
        }
    }

    /// Counts and logs one more failure of the folder; whether to give up
    /// (too many in a row, or the host is stopping) rather than pause and
    /// retry.
    fn give_up(&self, failures: &mut u32, e: &Error, what: &str) -> bool {
        const MOST_FAILURES: u32 = 50;
        *failures += 1;
        tracing::warn!(error = %e, failures = *failures, "{what}");
        if *failures > MOST_FAILURES || self.journal.is_stopping() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
        false
    }

    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        what: &'static str,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read().map_err(|e| self.error(what, &e))?;
        let table = txn.open_table(table).map_err(|e| self.error(what, &e))?;
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
    use super::*;

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
    fn what_a_killed_process_left_in_the_journal_is_folded_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateDb::open(dir.path()).unwrap());
        // As a killed process leaves it: records in the journal files, not
        // folded, and a last line the kill cut short.
        let line = |op: &journal::Op| format!("{}\n", serde_json::to_string(op).unwrap());
        let first = StoredTask::example("t-1");
        let second = StoredTask::example("t-2");
        std::fs::write(
            dir.path().join("state.journal.folding"),
            line(&journal::Op::PutTask {
                task: first.clone(),
            }),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("state.journal"),
            line(&journal::Op::PutTask {
                task: second.clone(),
            }) + &line(&journal::Op::RemoveTask { id: "t-1".into() })
                + "{\"op\":\"put_ta",
        )
        .unwrap();
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(
            db.tasks().unwrap(),
            [second],
            "in order: put, put, remove; the torn line dropped"
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("state.journal"))
                .unwrap()
                .len(),
            0,
            "folded, then started afresh"
        );
        assert!(!dir.path().join("state.journal.folding").exists());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = StateDb::open(dir.path()).unwrap();
            let txn = db.db.begin_write().unwrap();
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
