//! The stored forms of tasks and ASYNC executions: plain serde records,
//! JSON in the database, kept apart from the in-memory types so that those
//! can change without changing what is on disk (that takes a new schema).
//!
//! A task is written through its borrowed form ([`TaskRecord`]), whether it
//! comes from a [`StoredTask`] or straight from a task being created: one
//! definition of what is written, and creating a task copies none of its
//! fields to record it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactSpec;
use crate::task::Membership;
use crate::Value;

/// An artifact spec, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// The version its last upgrade replaced, kept for one rollback: a
    /// restart keeps it too. Absent in records of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<StoredVersion>,
}

/// A version a task ran before its last upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StoredVersion {
    pub artifact: StoredArtifact,
    /// Its sha256 (hex): a rollback loads exactly these bytes.
    pub digest: String,
    /// Unix milliseconds of the upgrade that replaced it.
    pub switched_at: u64,
}

/// A task as it is written: [`StoredTask`]'s fields, borrowed from
/// whatever holds them (see the module's documentation).
#[derive(Debug, Serialize)]
pub struct TaskRecord<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub artifact: ArtifactRecord<'a>,
    /// Hex, as [`StoredTask::digest`] (see [`HexDigest`]).
    pub digest: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
    pub membership: MembershipRecord<'a>,
    pub created_at: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<VersionRecord<'a>>,
}

/// An artifact spec as it is written ([`StoredArtifact`], borrowed).
#[derive(Debug, Serialize)]
pub struct ArtifactRecord<'a> {
    pub artifact_id: &'a str,
    pub artifact_type: &'a str,
    pub location: &'a str,
    pub version: &'a str,
    pub checksum: &'a str,
    pub metadata: &'a BTreeMap<String, String>,
}

/// A task's standing in the cluster as it is written
/// ([`StoredMembership`], borrowed).
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MembershipRecord<'a> {
    /// Not in a cluster.
    Local,
    /// Registered at the SMS by this node.
    Registered {
        /// The SMS's id for it.
        sms_id: &'a str,
    },
}

/// A version replaced by an upgrade as it is written ([`StoredVersion`],
/// borrowed).
#[derive(Debug, Serialize)]
pub struct VersionRecord<'a> {
    pub artifact: ArtifactRecord<'a>,
    pub digest: &'a str,
    pub switched_at: u64,
}

/// A digest's hex form on the stack, for a record to borrow: writing a
/// record allocates nothing for it.
#[derive(Debug, Clone, Copy)]
pub struct HexDigest([u8; 64]);

impl HexDigest {
    /// The hex form of `digest`.
    pub fn of(digest: &crate::digest::Sha256Digest) -> HexDigest {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(digest.as_bytes(), &mut hex).expect("64 hex digits hold 32 bytes");
        HexDigest(hex)
    }

    /// As a string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("hex digits are ASCII")
    }
}

impl<'a> From<&'a ArtifactSpec> for ArtifactRecord<'a> {
    fn from(a: &'a ArtifactSpec) -> Self {
        ArtifactRecord {
            artifact_id: &a.artifact_id,
            artifact_type: &a.artifact_type,
            location: &a.location,
            version: &a.version,
            checksum: &a.checksum,
            metadata: &a.metadata,
        }
    }
}

impl<'a> From<&'a StoredArtifact> for ArtifactRecord<'a> {
    fn from(a: &'a StoredArtifact) -> Self {
        ArtifactRecord {
            artifact_id: &a.artifact_id,
            artifact_type: &a.artifact_type,
            location: &a.location,
            version: &a.version,
            checksum: &a.checksum,
            metadata: &a.metadata,
        }
    }
}

impl MembershipRecord<'_> {
    /// The written form of `m`; `None` for a replica, which is not stored
    /// (see [`StoredMembership::of`]).
    pub fn of(m: &Membership) -> Option<MembershipRecord<'_>> {
        match m {
            Membership::Local => Some(MembershipRecord::Local),
            Membership::Registered { sms_id } => Some(MembershipRecord::Registered { sms_id }),
            Membership::Replica { .. } => None,
        }
    }
}

impl<'a> From<&'a StoredMembership> for MembershipRecord<'a> {
    fn from(m: &'a StoredMembership) -> Self {
        match m {
            StoredMembership::Local => MembershipRecord::Local,
            StoredMembership::Registered { sms_id } => MembershipRecord::Registered { sms_id },
        }
    }
}

impl<'a> From<&'a StoredVersion> for VersionRecord<'a> {
    fn from(v: &'a StoredVersion) -> Self {
        VersionRecord {
            artifact: ArtifactRecord::from(&v.artifact),
            digest: &v.digest,
            switched_at: v.switched_at,
        }
    }
}

impl TaskRecord<'_> {
    /// Appends the record's JSON to `out`, serialised straight from the
    /// borrowed fields: nothing is copied out of the task first.
    pub(super) fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a task record is plain data");
    }
}

impl StoredTask {
    /// Its written form.
    pub fn record(&self) -> TaskRecord<'_> {
        TaskRecord {
            id: &self.id,
            name: &self.name,
            description: &self.description,
            artifact: ArtifactRecord::from(&self.artifact),
            digest: &self.digest,
            metadata: &self.metadata,
            membership: MembershipRecord::from(&self.membership),
            created_at: self.created_at,
            previous: self.previous.as_ref().map(VersionRecord::from),
        }
    }
}

impl Serialize for StoredTask {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.record().serialize(serializer)
    }
}

impl Serialize for StoredArtifact {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ArtifactRecord::from(self).serialize(serializer)
    }
}

impl Serialize for StoredMembership {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MembershipRecord::from(self).serialize(serializer)
    }
}

impl Serialize for StoredVersion {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        VersionRecord::from(self).serialize(serializer)
    }
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
            previous: None,
        }
    }
}

/// A value, as stored. Bytes are written as base64 strings
/// (`compact_bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum StoredValue {
    Unit,
    String(String),
    I64(i64),
    F64(#[serde(with = "any_float")] f64),
    Bool(bool),
    Bytes(#[serde(with = "compact_bytes")] Vec<u8>),
    Raw {
        type_url: String,
        #[serde(with = "compact_bytes")]
        bytes: Vec<u8>,
    },
}

/// A float in a JSON record: a number when finite, else `"NaN"`, `"inf"` or
/// `"-inf"` — JSON has no number for those, and serde_json writes them as
/// `null`, which then cannot be read back: one NaN result would make its
/// record (and, in the journal, everything after it) unreadable. `null`, as
/// releases before wrote a NaN, reads as NaN.
mod any_float {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(n: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        match *n {
            n if n.is_finite() => serializer.serialize_f64(n),
            n if n.is_nan() => serializer.serialize_str("NaN"),
            n if n > 0.0 => serializer.serialize_str("inf"),
            _ => serializer.serialize_str("-inf"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        deserializer.deserialize_any(Float)
    }

    struct Float;

    impl Visitor<'_> for Float {
        type Value = f64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number, or \"NaN\", \"inf\" or \"-inf\"")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }

        #[allow(clippy::cast_precision_loss)]
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }

        #[allow(clippy::cast_precision_loss)]
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }

        fn visit_unit<E: de::Error>(self) -> Result<f64, E> {
            Ok(f64::NAN)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
            }
        }
    }
}

/// Bytes in a JSON record as a base64 string: 4 characters for 3 bytes,
/// where serde's default, an array of numbers, takes up to 4 for each one
/// (about 3.6 on average). Arrays of numbers, as releases before wrote
/// them, still read.
mod compact_bytes {
    use std::fmt;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(Bytes)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes, as a base64 string or an array of numbers")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            STANDARD.decode(v).map_err(E::custom)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // The hint comes from the input: capped, not trusted.
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
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
    /// A hash of its call's parameters when its id was the client's (zero:
    /// none, or a record of an earlier release): a restart keeps what a
    /// reuse of the id must match to be a retry.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parameters_hash: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("stored records are plain data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_floats_are_written_so_that_they_read_back() {
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 1e300] {
            let json = serde_json::to_vec(&StoredValue::F64(n)).unwrap();
            let StoredValue::F64(back) = serde_json::from_slice(&json).unwrap() else {
                panic!("{}", String::from_utf8_lossy(&json));
            };
            assert!(back.to_bits() == n.to_bits() || (n.is_nan() && back.is_nan()));
        }
        let old: StoredValue = serde_json::from_str(r#"{"type":"f64","value":null}"#).unwrap();
        assert!(matches!(old, StoredValue::F64(n) if n.is_nan()));
        let whole: StoredValue = serde_json::from_str(r#"{"type":"f64","value":3}"#).unwrap();
        assert_eq!(whole, StoredValue::F64(3.0));
    }
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

    fn execution(output: StoredValue) -> StoredExecution {
        StoredExecution {
            id: "e-1".into(),
            task_id: "t-1".into(),
            function: "f".into(),
            accepted_at: 1,
            status: Some("completed".into()),
            output: Some(output),
            error_code: String::new(),
            error_message: String::new(),
            parameters_hash: 0,
        }
    }

    #[test]
    fn output_bytes_are_written_as_base64() {
        let bytes: Vec<u8> = (0..=255).cycle().take(3000).collect();
        for output in [
            StoredValue::Bytes(bytes.clone()),
            StoredValue::Raw {
                type_url: "type.googleapis.com/x.Y".into(),
                bytes: bytes.clone(),
            },
        ] {
            let stored = execution(output);
            let json = encode(&stored);
            assert!(
                json.len() < bytes.len() * 4 / 3 + 300,
                "{} bytes of JSON for {} bytes of output",
                json.len(),
                bytes.len()
            );
            let text = std::str::from_utf8(&json).unwrap();
            assert!(!text.contains('['), "no number array: {text}");
            let read: StoredExecution = serde_json::from_slice(&json).unwrap();
            assert_eq!(read, stored);
        }
    }

    #[test]
    fn outputs_the_release_before_wrote_as_number_arrays_still_read() {
        // As the release before wrote them: bytes as arrays of numbers.
        let json = r#"{"id":"e-1","task_id":"t-1","function":"f","accepted_at":1,
            "status":"completed","output":{"type":"bytes","value":[0,1,254,255]},
            "error_code":"","error_message":""}"#;
        let read: StoredExecution = serde_json::from_str(json).unwrap();
        assert_eq!(read, execution(StoredValue::Bytes(vec![0, 1, 254, 255])));
        let json = r#"{"id":"e-1","task_id":"t-1","function":"f","accepted_at":1,
            "status":"completed","output":{"value":{"type_url":"u","bytes":[7,8]},"type":"raw"},
            "error_code":"","error_message":""}"#;
        let read: StoredExecution = serde_json::from_str(json).unwrap();
        assert_eq!(
            read,
            execution(StoredValue::Raw {
                type_url: "u".into(),
                bytes: vec![7, 8]
            }),
            "whatever the order of tag and content"
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
