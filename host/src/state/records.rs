//! The stored forms of tasks and ASYNC executions: plain serde records,
//! JSON in the database, kept apart from the in-memory types so that those
//! can change without changing what is on disk (that takes a new schema).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactSpec;
use crate::registry::Membership;
use crate::Value;

/// An artifact spec, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub artifact_id: String,
    pub artifact_type: String,
    pub location: String,
    pub version: String,
    pub checksum: String,
    pub metadata: BTreeMap<String, String>,
}

impl From<&ArtifactSpec> for StoredArtifact {
    fn from(a: &ArtifactSpec) -> Self {
        StoredArtifact {
            artifact_id: a.artifact_id.clone(),
            artifact_type: a.artifact_type.clone(),
            location: a.location.clone(),
            version: a.version.clone(),
            checksum: a.checksum.clone(),
            metadata: a.metadata.clone(),
        }
    }
}

impl From<StoredArtifact> for ArtifactSpec {
    fn from(a: StoredArtifact) -> Self {
        ArtifactSpec {
            artifact_id: a.artifact_id,
            artifact_type: a.artifact_type,
            location: a.location,
            version: a.version,
            checksum: a.checksum,
            metadata: a.metadata,
        }
    }
}

/// A task's standing in the cluster, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredMembership {
    /// Not in a cluster.
    Local,
    /// Registered at the SMS by this node.
    Registered {
        /// The SMS's id for it.
        sms_id: String,
    },
}

impl StoredMembership {
    /// The stored form of `m`; `None` for a replica, which is not stored
    /// (the cluster has it, and may have a newer version by the restart).
    pub fn of(m: &Membership) -> Option<StoredMembership> {
        match m {
            Membership::Local => Some(StoredMembership::Local),
            Membership::Registered { sms_id } => Some(StoredMembership::Registered {
                sms_id: sms_id.clone(),
            }),
            Membership::Replica { .. } => None,
        }
    }
}

impl From<StoredMembership> for Membership {
    fn from(m: StoredMembership) -> Self {
        match m {
            StoredMembership::Local => Membership::Local,
            StoredMembership::Registered { sms_id } => Membership::Registered { sms_id },
        }
    }
}

/// A task created here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTask {
    pub id: String,
    pub name: String,
    pub description: String,
    pub artifact: StoredArtifact,
    /// The sha256 (hex) of the plugin it runs: a restart loads exactly
    /// these bytes again, verified, whatever the location holds by then.
    pub digest: String,
    /// The invocation metadata it was created with, its isolation tier
    /// written in (`spearlet.isolation`, `spearlet.memory.max`; see
    /// `crate::invoke::IsolationSetting`). The tier needs no field of its
    /// own: a record of an earlier release names none and reads as
    /// in-process, as it ran; an earlier release that rewrites a newer
    /// record keeps the keys.
    pub metadata: BTreeMap<String, String>,
    pub membership: StoredMembership,
    /// Unix seconds.
    pub created_at: u64,
}

#[cfg(test)]
impl StoredTask {
    pub(crate) fn example(id: &str) -> StoredTask {
        StoredTask {
            id: id.to_owned(),
            name: format!("name-{id}"),
            description: String::new(),
            artifact: StoredArtifact::from(&ArtifactSpec::at("/srv/plugins/libx.so")),
            digest: "ab".repeat(32),
            metadata: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            membership: StoredMembership::Local,
            created_at: 1,
        }
    }
}

/// A value, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum StoredValue {
    Unit,
    String(String),
    I64(i64),
    F64(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Raw { type_url: String, bytes: Vec<u8> },
}

impl From<&Value> for StoredValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Unit => StoredValue::Unit,
            Value::String(s) => StoredValue::String(s.clone()),
            Value::I64(n) => StoredValue::I64(*n),
            Value::F64(n) => StoredValue::F64(*n),
            Value::Bool(b) => StoredValue::Bool(*b),
            Value::Bytes(b) => StoredValue::Bytes(b.clone()),
            Value::Raw { type_url, bytes } => StoredValue::Raw {
                type_url: type_url.clone(),
                bytes: bytes.clone(),
            },
        }
    }
}

impl From<StoredValue> for Value {
    fn from(v: StoredValue) -> Self {
        match v {
            StoredValue::Unit => Value::Unit,
            StoredValue::String(s) => Value::String(s),
            StoredValue::I64(n) => Value::I64(n),
            StoredValue::F64(n) => Value::F64(n),
            StoredValue::Bool(b) => Value::Bool(b),
            StoredValue::Bytes(b) => Value::Bytes(b),
            StoredValue::Raw { type_url, bytes } => Value::Raw { type_url, bytes },
        }
    }
}

/// An ASYNC execution, from acceptance to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredExecution {
    pub id: String,
    pub task_id: String,
    pub function: String,
    /// Unix milliseconds of its acceptance.
    pub accepted_at: u64,
    /// `None` until it ends; then its final status, as its wire name
    /// (`completed`, `failed`, `cancelled`, `timeout`).
    pub status: Option<String>,
    pub output: Option<StoredValue>,
    pub error_code: String,
    pub error_message: String,
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records are plain data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::IsolationSetting;
    use crate::isolate::Isolation;

    #[test]
    fn a_task_recorded_before_isolation_tiers_reads_as_in_process_without_a_cap() {
        // As the release before the process tier wrote it.
        let json = r#"{"id":"t-1","name":"old","description":"","artifact":{"artifact_id":"",
            "artifact_type":"native","location":"/srv/libx.so","version":"","checksum":"",
            "metadata":{}},"digest":"abab","metadata":{"start":"10"},
            "membership":{"kind":"local"},"created_at":1}"#;
        let task: StoredTask = serde_json::from_str(json).unwrap();
        assert_eq!(
            IsolationSetting::of_task(&task.metadata).unwrap(),
            IsolationSetting {
                isolation: Isolation::InProcess,
                memory_max: None
            }
        );
    }

    #[test]
    fn the_tier_written_at_creation_is_read_back_from_the_record() {
        let mut task = StoredTask::example("t-1");
        IsolationSetting {
            isolation: Isolation::Process,
            memory_max: Some(64 << 20),
        }
        .record(&mut task.metadata);
        let read: StoredTask = serde_json::from_slice(&encode(&task)).unwrap();
        assert_eq!(read, task);
        assert_eq!(
            IsolationSetting::of_task(&read.metadata).unwrap(),
            IsolationSetting {
                isolation: Isolation::Process,
                memory_max: Some(64 << 20)
            }
        );
    }
}
