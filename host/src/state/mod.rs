//! What survives a restart: the tasks created here and the ASYNC
//! executions accepted here, in an embedded database in the data directory
//! (`<data_dir>/state.redb`, redb: pure Rust, crash-safe, no server).
//!
//! Every write is committed durably before the caller acknowledges what it
//! recorded, so after a crash — SIGKILL, power loss — every task whose
//! creation was acknowledged is there, and every acknowledged ASYNC
//! execution is either final or reported as ended by the restart. SYNC and
//! STREAM executions stay in memory only: their caller was answered, or
//! saw the connection drop.
//!
//! The database carries a schema number; one written by a newer spearlet is
//! refused rather than misread.

mod records;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{Error, Result};

pub use records::{StoredArtifact, StoredExecution, StoredMembership, StoredTask, StoredValue};

/// The schema this build reads and writes.
pub const SCHEMA: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("async_executions");

/// The file, under the data directory.
pub const FILE: &str = "state.redb";

/// The open database.
#[derive(Debug)]
pub struct StateDb {
    db: Database,
    path: PathBuf,
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
        let state = StateDb { db, path };
        state.check_schema()?;
        Ok(state)
    }

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
    pub fn put_task(&self, task: &StoredTask) -> Result<()> {
        self.put(TASKS, &task.id, &records::encode(task), "record a task")
    }

    /// Forgets a task.
    ///
    /// # Errors
    ///
    /// [`Error::State`].
    pub fn remove_task(&self, id: &str) -> Result<()> {
        self.remove(TASKS, id, "forget a task")
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
    pub fn put_execution(&self, execution: &StoredExecution) -> Result<()> {
        self.put(
            EXECUTIONS,
            &execution.id,
            &records::encode(execution),
            "record an execution",
        )
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

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &[u8],
        what: &'static str,
    ) -> Result<()> {
        let txn = self.write(what)?;
        {
            let mut table = txn.open_table(table).map_err(|e| self.error(what, &e))?;
            table.insert(key, value).map_err(|e| self.error(what, &e))?;
        }
        txn.commit().map_err(|e| self.error(what, &e))
    }

    fn remove(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        what: &'static str,
    ) -> Result<()> {
        let txn = self.write(what)?;
        {
            let mut table = txn.open_table(table).map_err(|e| self.error(what, &e))?;
            table.remove(key).map_err(|e| self.error(what, &e))?;
        }
        txn.commit().map_err(|e| self.error(what, &e))
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
            db.put_task(&task).unwrap();
            db.put_task(&StoredTask::example("t-2")).unwrap();
            db.remove_task("t-2").unwrap();
        }
        let db = StateDb::open(dir.path()).unwrap();
        assert_eq!(db.tasks().unwrap(), [task]);
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
