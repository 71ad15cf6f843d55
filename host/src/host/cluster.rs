//! The host as a node of a SPEAR cluster (`docs/cluster.md`): what it
//! tells the SMS when it starts, creates or deletes a task, and how it
//! runs a task that another node registered.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use super::Host;
use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::loader::Plugin;
use crate::sms::{Executable, LinkStatus, NodeAgent, Sms, TaskRegistration};
use crate::task::{CreationKey, Membership, Task};

impl Host {
    /// The SMS client, when the host is part of a cluster (`sms.grpc`).
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
    pub fn sms(&self) -> Option<&Arc<Sms>> {
        self.inner.sms.as_ref()
    }

    /// The link to the SMS now, when there is one.
    #[doc(hidden)] // For the binary and tests: its type is not part of the embedding API.
    pub fn sms_status(&self) -> Option<LinkStatus> {
        self.sms().map(|sms| sms.status())
    }

    /// Registers this host as a node of the cluster, reachable at
    /// `listening` unless `sms.advertise` says otherwise (its HTTP port,
    /// the stream plane, at `http`), and keeps it registered with
    /// heartbeats until [`NodeAgent::leave`]. `None` outside a cluster.
    pub(crate) fn join_cluster(
        &self,
        listening: SocketAddr,
        http: Option<SocketAddr>,
    ) -> Option<NodeAgent> {
        let sms = self.sms()?;
        let host = self.clone();
        Some(sms.join(
            listening,
            http,
            Box::new(move || {
                let stats = host.stats();
                HashMap::from([
                    ("tasks".to_owned(), stats.tasks.to_string()),
                    ("running_executions".to_owned(), stats.running.to_string()),
                    ("pending_executions".to_owned(), stats.pending.to_string()),
                    (
                        "status".to_owned(),
                        if host.is_stopping() {
                            "stopping"
                        } else {
                            "serving"
                        }
                        .to_owned(),
                    ),
                ])
            }),
        ))
    }

    /// Registers a task being created here; returns its SMS id. A local
    /// artifact is published to the SMS file API first (once per digest),
    /// so other nodes can fetch it.
    pub(crate) async fn register_in_cluster(
        &self,
        sms: &Sms,
        plugin: &Plugin,
        task: (&str, &str),
        artifact: &ArtifactSpec,
        alias: Option<&str>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<String> {
        let digest = plugin.digest();
        let uri = if artifact.is_local() {
            let cached = self.artifacts().cache().path_of(&digest);
            let path = if cached.exists() {
                cached
            } else {
                plugin.path().to_owned()
            };
            let file_name = format!("{}-{}.so", plugin.name(), plugin.version());
            sms.publish(&digest, &path, &file_name, &artifact.location)
                .await?
        } else {
            artifact.location.clone()
        };
        sms.register_task(TaskRegistration {
            name: task.0,
            description: task.1,
            version: plugin.version(),
            metadata,
            alias,
            functions: plugin
                .functions()
                .iter()
                .map(|f| f.name.to_string())
                .collect(),
            executable: Executable {
                uri,
                checksum: digest,
                name: plugin.name().to_owned(),
            },
        })
        .await
    }

    /// Best effort, after a creation failed past its registration: the SMS
    /// must not point at a task that does not exist here.
    pub(crate) async fn withdraw_registration(&self, sms_id: &str, cause: &Error) {
        let Some(sms) = self.sms() else { return };
        let reason = format!("creation failed on this node: {}", cause.kind());
        if let Err(e) = sms.unregister_task(sms_id, &reason).await {
            tracing::warn!(sms_id, error = %e, "a task whose creation failed stays registered at the SMS");
        }
    }

    /// The task `task_id` names in the cluster, created here from its
    /// registration. Racing callers make one SMS lookup and one fetch.
    ///
    /// # Errors
    ///
    /// [`Error::TaskNotFound`] when the SMS does not know it;
    /// [`Error::TaskNotRunnableHere`]; [`Error::SmsUnavailable`] (never
    /// "not found" when the SMS could not be asked); and what creating the
    /// task fails with.
    pub(crate) async fn replicate(
        &self,
        sms: &Sms,
        task_id: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<Arc<Task>> {
        // The lookup is shared by every caller racing for this id, so it
        // keeps to the SMS's own bound; each caller stops waiting for it
        // at its own deadline.
        let shared = self
            .tasks()
            .get_or_create(CreationKey::Id(task_id.to_owned()), async {
                let remote =
                    sms.find_task_by(task_id)
                        .await?
                        .ok_or_else(|| Error::TaskNotFound {
                            task_id: task_id.to_owned(),
                        })?;
                let artifact =
                    remote
                        .artifact
                        .clone()
                        .map_err(|reason| Error::TaskNotRunnableHere {
                            task_id: task_id.to_owned(),
                            reason,
                        })?;
                let isolation =
                    crate::invoke::IsolationSetting::of_task(&remote.metadata)?.isolation;
                let plugin = self.artifacts().load_as(&artifact, isolation).await?;
                // A name another task holds here names that one; this one
                // goes by its id.
                let name = if remote.name.is_empty() || self.tasks().by_name(&remote.name).is_some()
                {
                    task_id.to_owned()
                } else {
                    remote.name.clone()
                };
                tracing::info!(
                    task = task_id,
                    sms_id = %remote.sms_id,
                    owner = %remote.node_uuid,
                    "running a task registered by another node"
                );
                self.assemble_task(
                    Arc::from(task_id),
                    (&name, &remote.description),
                    &artifact,
                    plugin,
                    &remote.metadata,
                    Membership::Replica {
                        sms_id: remote.sms_id.clone(),
                        node_uuid: remote.node_uuid.clone(),
                    },
                )
                .await
            });
        let Some(deadline) = deadline else {
            return shared.await;
        };
        tokio::time::timeout_at(deadline.into(), shared)
            .await
            .unwrap_or_else(|_| {
                Err(Error::SmsUnavailable {
                    call: crate::sms::SmsCall::GetTask,
                    endpoint: sms.endpoint().to_owned(),
                    reason: "no answer about the task before the call's deadline".to_owned(),
                })
            })
    }

    /// Tells the SMS a task deleted here is gone, when this node registered
    /// it; says what happened there, for the reply.
    pub(crate) async fn withdraw_deleted(&self, membership: &Membership) -> Option<String> {
        match membership {
            Membership::Local => None,
            Membership::Registered { sms_id } => {
                let sms = self.sms()?;
                Some(
                    match sms.unregister_task(sms_id, "deleted on its node").await {
                        Ok(()) => format!("unregistered from the SMS ({sms_id})"),
                        Err(e) => format!("still registered at the SMS: {e}"),
                    },
                )
            }
            Membership::Replica { node_uuid, .. } => Some(format!(
                "removed from this node only; it stays registered at the SMS by node {node_uuid}"
            )),
        }
    }
}
