//! Tasks in the cluster: registering the ones created here, finding the
//! ones created elsewhere, unregistering on delete.
//!
//! The SMS assigns task ids. A task created under a client-chosen id
//! (EXISTING_TASK with `create_if_not_exists`) keeps that id here and is
//! registered with it in its metadata under [`ALIAS_KEY`]; another node
//! asked for that id finds it by the alias when the SMS does not know the
//! id itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use spearlet_proto::sms::task_service_client::TaskServiceClient;
use spearlet_proto::sms::{
    ExecutableType, GetTaskRequest, ListTasksRequest, RegisterTaskRequest, Task, TaskExecutable,
    TaskPriority, UnregisterTaskRequest,
};

use super::{Sms, SmsCall};
use crate::artifact::ArtifactSpec;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};

/// Metadata key under which a client-chosen task id is registered.
pub const ALIAS_KEY: &str = "spearlet.task_id";

/// Invocation metadata key naming the SMS gateway route of a task created
/// by that invocation (SPEAR's `endpoint`: letters, digits, `_` and `-`).
pub const ENDPOINT_KEY: &str = "spearlet.endpoint";

/// Tasks read per ListTasks page while looking for an alias.
const PAGE: i32 = 100;
/// Pages read at most: an alias past 10,000 tasks is not looked for.
const MAX_PAGES: i32 = 100;

/// The plugin a registered task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// Where other nodes fetch it: `smsfile://ID` or `http(s)://…`.
    pub uri: String,
    /// Its sha256.
    pub checksum: Sha256Digest,
    /// The plugin's name.
    pub name: String,
}

/// A task to register.
#[derive(Debug, Clone)]
pub struct TaskRegistration<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its description.
    pub description: &'a str,
    /// The plugin's version.
    pub version: &'a str,
    /// The invocation metadata it was created with.
    pub metadata: &'a BTreeMap<String, String>,
    /// The id it has here when the client chose it.
    pub alias: Option<&'a str>,
    /// Its functions, registered as the task's capabilities.
    pub functions: Vec<String>,
    /// The plugin.
    pub executable: Executable,
}

/// A task as the SMS knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTask {
    /// The id the SMS gave it.
    pub sms_id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The node that registered it.
    pub node_uuid: String,
    /// Its metadata (the creating invocation's metadata).
    pub metadata: BTreeMap<String, String>,
    /// The artifact to run it from, or why this node cannot.
    pub artifact: std::result::Result<ArtifactSpec, String>,
}

impl Sms {
    /// Registers a task created here; returns the id the SMS gave it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for an endpoint SPEAR would refuse;
    /// [`Error::SmsUnavailable`], [`Error::SmsRefused`].
    pub async fn register_task(&self, task: TaskRegistration<'_>) -> Result<String> {
        let endpoint = task.metadata.get(ENDPOINT_KEY).cloned().unwrap_or_default();
        check_endpoint(&endpoint)?;
        let mut metadata: HashMap<String, String> = task
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(alias) = task.alias {
            metadata.insert(ALIAS_KEY.to_owned(), alias.to_owned());
        }
        let request = RegisterTaskRequest {
            name: task.name.to_owned(),
            description: task.description.to_owned(),
            priority: TaskPriority::Normal.into(),
            node_uuid: self.node_uuid.clone(),
            endpoint,
            version: task.version.to_owned(),
            capabilities: task.functions,
            metadata,
            config: HashMap::new(),
            executable: Some(TaskExecutable {
                r#type: ExecutableType::Binary.into(),
                uri: task.executable.uri,
                name: task.executable.name,
                checksum_sha256: task.executable.checksum.to_hex(),
                args: Vec::new(),
                env: HashMap::new(),
            }),
        };
        let call = SmsCall::RegisterTask;
        let reply = self
            .outcome(
                call,
                TaskServiceClient::new(self.channel())
                    .register_task(request)
                    .await,
            )?
            .into_inner();
        if !reply.success || reply.task_id.is_empty() {
            return Err(self.refused(call, reply.message));
        }
        // Known from now on, whatever an earlier lookup found.
        self.unknown.forget(&reply.task_id);
        if let Some(alias) = task.alias {
            self.unknown.forget(alias);
        }
        Ok(reply.task_id)
    }

    /// The task `id` names in the cluster: by its SMS id, else by a
    /// client-chosen id registered as an alias. `None` when the SMS knows
    /// neither — or did not within `sms.unknown_task_ttl` (then it is not
    /// asked again). The whole lookup (a GetTask, then up to a hundred
    /// pages of ListTasks) takes at most twice `sms.request_timeout`; a
    /// caller with a deadline of its own stops waiting sooner.
    ///
    /// # Errors
    ///
    /// [`Error::SmsUnavailable`] (also when the lookup runs out of time),
    /// [`Error::SmsRefused`].
    pub async fn find_task_by(&self, id: &str) -> Result<Option<RemoteTask>> {
        if self.unknown.is_unknown(id) {
            return Ok(None);
        }
        let found = tokio::time::timeout(self.lookup_timeout, self.find_task(id))
            .await
            .map_err(|_| {
                self.failed[SmsCall::GetTask.index()].fetch_add(1, Ordering::Relaxed);
                Error::SmsUnavailable {
                    call: SmsCall::GetTask,
                    endpoint: self.grpc.to_string(),
                    reason: format!(
                        "no answer about the task within {}",
                        humantime::format_duration(self.lookup_timeout)
                    ),
                }
            })??;
        if found.is_none() {
            self.unknown.remember(id);
        }
        Ok(found)
    }

    /// As [`Sms::find_task_by`], asking the SMS whatever it said before,
    /// without a deadline of its own.
    ///
    /// # Errors
    ///
    /// [`Error::SmsUnavailable`], [`Error::SmsRefused`].
    pub async fn find_task(&self, id: &str) -> Result<Option<RemoteTask>> {
        let call = SmsCall::GetTask;
        let reply = self
            .outcome(
                call,
                TaskServiceClient::new(self.channel())
                    .get_task(GetTaskRequest {
                        task_id: id.to_owned(),
                    })
                    .await,
            )?
            .into_inner();
        if let (true, Some(task)) = (reply.found, reply.task) {
            return Ok(Some(remote(task)));
        }
        self.find_alias(id).await
    }

    async fn find_alias(&self, alias: &str) -> Result<Option<RemoteTask>> {
        let call = SmsCall::ListTasks;
        for page in 0..MAX_PAGES {
            // Negative filters mean "any": SPEAR's SMS reads 0 as "status
            // UNKNOWN only", which would hide every registered task.
            let request = ListTasksRequest {
                node_uuid: String::new(),
                status_filter: -1,
                priority_filter: -1,
                limit: PAGE,
                offset: page * PAGE,
            };
            let reply = self
                .outcome(
                    call,
                    TaskServiceClient::new(self.channel())
                        .list_tasks(request)
                        .await,
                )?
                .into_inner();
            let count = reply.tasks.len();
            if let Some(task) = reply
                .tasks
                .into_iter()
                .find(|t| t.metadata.get(ALIAS_KEY).is_some_and(|a| a == alias))
            {
                return Ok(Some(remote(task)));
            }
            if count < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        Ok(None)
    }

    /// Unregisters the task the SMS knows as `sms_id`.
    ///
    /// # Errors
    ///
    /// [`Error::SmsUnavailable`], [`Error::SmsRefused`].
    pub async fn unregister_task(&self, sms_id: &str, reason: &str) -> Result<()> {
        let call = SmsCall::UnregisterTask;
        let reply = self
            .outcome(
                call,
                TaskServiceClient::new(self.channel())
                    .unregister_task(UnregisterTaskRequest {
                        task_id: sms_id.to_owned(),
                        reason: reason.to_owned(),
                    })
                    .await,
            )?
            .into_inner();
        if !reply.success {
            return Err(self.refused(call, reply.message));
        }
        Ok(())
    }
}

/// A registration made for a task whose creation is still under way: kept
/// with [`PendingRegistration::keep`] once the task exists here, withdrawn
/// when dropped otherwise — the creation failed, or its caller went away
/// and the creation's future was dropped mid-way — so the SMS never points
/// at a task this node does not have.
#[derive(Debug)]
#[must_use = "dropping it withdraws the registration"]
pub struct PendingRegistration {
    sms: std::sync::Arc<Sms>,
    sms_id: Option<String>,
    reason: &'static str,
}

impl PendingRegistration {
    /// Holds the registration `sms_id` until kept.
    pub fn new(sms: std::sync::Arc<Sms>, sms_id: String) -> Self {
        PendingRegistration {
            sms,
            sms_id: Some(sms_id),
            reason: "the task's creation was abandoned on this node",
        }
    }

    /// The SMS's id for it.
    pub fn sms_id(&self) -> &str {
        self.sms_id.as_deref().unwrap_or_default()
    }

    /// The task exists here: the registration stays.
    pub fn keep(mut self) -> String {
        self.sms_id.take().unwrap_or_default()
    }
}

impl Drop for PendingRegistration {
    fn drop(&mut self) {
        let Some(sms_id) = self.sms_id.take() else {
            return;
        };
        // Drop cannot wait: the withdrawal runs on its own, on the runtime
        // the creation ran on (there is none only in a runtime's teardown,
        // when nothing can be sent anyway).
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                sms_id,
                "an abandoned task's registration stays at the SMS: no runtime to withdraw it"
            );
            return;
        };
        let (sms, reason) = (std::sync::Arc::clone(&self.sms), self.reason);
        runtime.spawn(async move {
            match sms.unregister_task(&sms_id, reason).await {
                Ok(()) => tracing::info!(sms_id, reason, "registration withdrawn"),
                Err(e) => tracing::warn!(sms_id, error = %e, "a task whose creation did not finish stays registered at the SMS"),
            }
        });
    }
}

/// SPEAR's SMS takes an endpoint as a gateway route name and refuses
/// anything else; refusing it here says which key to fix.
fn check_endpoint(endpoint: &str) -> Result<()> {
    if endpoint
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Ok(());
    }
    Err(Error::InvalidRequest {
        field: "invocation_metadata",
        reason: format!(
            "`{ENDPOINT_KEY}` is a gateway route name (letters, digits, `_`, `-`), got `{endpoint}`; \
             other nodes reach this one through its node record, not an address"
        ),
    })
}

fn remote(task: Task) -> RemoteTask {
    RemoteTask {
        artifact: runnable(&task),
        sms_id: task.task_id,
        name: task.name,
        description: task.description,
        node_uuid: task.node_uuid,
        metadata: task.metadata.into_iter().collect(),
    }
}

/// What this node would run for `task`, or why it cannot run it.
fn runnable(task: &Task) -> std::result::Result<ArtifactSpec, String> {
    let executable = task
        .executable
        .as_ref()
        .ok_or("it was registered without an executable")?;
    match ExecutableType::try_from(executable.r#type) {
        Ok(ExecutableType::Binary) => {}
        Ok(other) => {
            return Err(format!(
                "its executable is {}; this node runs native plugins (EXECUTABLE_TYPE_BINARY)",
                other.as_str_name()
            ))
        }
        Err(_) => {
            return Err(format!(
                "its executable type {} is unknown",
                executable.r#type
            ))
        }
    }
    if executable.uri.trim().is_empty() {
        return Err("its executable has no uri".to_owned());
    }
    if executable.checksum_sha256.trim().is_empty() {
        return Err(
            "its executable has no checksum_sha256, and this node loads only artifacts pinned by one"
                .to_owned(),
        );
    }
    Ok(ArtifactSpec {
        artifact_id: executable.name.clone(),
        artifact_type: "binary".to_owned(),
        location: executable.uri.clone(),
        version: task.version.clone(),
        checksum: executable.checksum_sha256.clone(),
        metadata: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_route_names_not_addresses() {
        for ok in ["", "images", "resize_v2", "a-b"] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in ["127.0.0.1:50052", "a b", "x/y"] {
            let err = check_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(ENDPOINT_KEY), "{err}");
        }
    }

    #[test]
    fn only_pinned_native_executables_run_here() {
        let task = |r#type: ExecutableType, uri: &str, checksum: &str| Task {
            executable: Some(TaskExecutable {
                r#type: r#type.into(),
                uri: uri.into(),
                checksum_sha256: checksum.into(),
                ..TaskExecutable::default()
            }),
            ..Task::default()
        };
        let sum = "ab".repeat(32);
        let ok = runnable(&task(ExecutableType::Binary, "smsfile://f1", &sum)).unwrap();
        assert_eq!(
            (ok.location.as_str(), ok.checksum.as_str()),
            ("smsfile://f1", sum.as_str())
        );
        let wasm = runnable(&task(ExecutableType::Wasm, "smsfile://f1", &sum)).unwrap_err();
        assert!(wasm.contains("EXECUTABLE_TYPE_WASM"), "{wasm}");
        let unpinned = runnable(&task(ExecutableType::Binary, "smsfile://f1", "")).unwrap_err();
        assert!(unpinned.contains("checksum_sha256"), "{unpinned}");
        let none = runnable(&Task::default()).unwrap_err();
        assert!(none.contains("without an executable"), "{none}");
    }
}
