//! What a function declares (its parameters' types, whether it streams),
//! asked of the server before a call, so that `invoke` types untyped `-p`
//! values as the function expects and streams a stream function.

use spearlet_proto::spearlet as pb;

use super::invoke::{build_request, InvokeArgs};

/// What the server says the function declares, when the task exists there.
pub(super) struct Declared {
    pub params: std::collections::HashMap<String, spearlet::signature::ParamKind>,
    pub stream: bool,
}

/// The function's declared signature and kind, from the task's record on
/// the server (best effort: `None` when the task does not exist yet).
pub(super) async fn declared(client: &mut super::Client, args: &InvokeArgs) -> Option<Declared> {
    if let Some(known) = declared_by_task(client, args).await {
        return Some(known);
    }
    // Not created yet: a dry run of this very call (nothing runs, no task
    // is made) says what the function declares.
    args.artifact.as_ref()?;
    let mut probe = build_request(args, None).ok()?;
    probe
        .invocation_metadata
        .insert(spearlet::DRY_RUN_KEY.to_owned(), "true".to_owned());
    probe.parameters.clear();
    let reply = client.invoke_function(probe).await.ok()?.into_inner();
    let metrics = reply.result?.metrics;
    Some(Declared {
        params: spearlet::signature::params(metrics.get("signature")?)?
            .into_iter()
            .map(|p| (p.name, p.kind))
            .collect(),
        stream: metrics.get("kind").map(String::as_str) == Some("stream"),
    })
}

async fn declared_by_task(client: &mut super::Client, args: &InvokeArgs) -> Option<Declared> {
    let metadata = match (&args.task_id, &args.task_name) {
        (Some(id), _) => {
            client
                .get_task(pb::GetTaskRequest {
                    task_id: id.clone(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .task?
                .metadata
        }
        (None, Some(name)) => {
            client
                .list_tasks(pb::ListTasksRequest {
                    prefix: name.clone(),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner()
                .tasks
                .into_iter()
                .find(|t| t.task_name == *name)?
                .metadata
        }
        (None, None) => return None,
    };
    let signature = metadata.get(&format!("signature.{}", args.function))?;
    Some(Declared {
        params: spearlet::signature::params(signature)?
            .into_iter()
            .map(|p| (p.name, p.kind))
            .collect(),
        stream: metadata
            .get(&format!("kind.{}", args.function))
            .map(String::as_str)
            == Some("stream"),
    })
}
