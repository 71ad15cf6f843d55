//! A real spearlet server on 127.0.0.1:0 and request builders for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use prost::Message;
use prost_types::Any;
use spearlet::{Config, Host};
use spearlet_proto::spearlet as pb;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use spearlet_test_artifacts::Artifact;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub struct TestServer {
    pub addr: SocketAddr,
    /// The node's HTTP port, when started with one.
    pub http_addr: Option<SocketAddr>,
    pub host: Host,
    pub client: FunctionServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _data: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        Self::launch(edit, false).await
    }

    /// With the node's HTTP port (the stream plane) on 127.0.0.1:0.
    pub async fn start_node_with(edit: impl FnOnce(&mut Config)) -> Self {
        Self::launch(edit, true).await
    }

    async fn launch(edit: impl FnOnce(&mut Config), with_http: bool) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut config = crate::helpers::config_in(data.path());
        config.pool.acquire_timeout = Duration::from_secs(10);
        edit(&mut config);
        let host = Host::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let serving = host.clone();
        let (http, http_addr) = if with_http {
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let at = http.local_addr().unwrap();
            (Some(http), Some(at))
        } else {
            (None, None)
        };
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            match http {
                Some(http) => spearlet::api::serve_node(serving, listener, Some(http), None, stop)
                    .await
                    .unwrap(),
                None => spearlet::api::serve(serving, listener, stop).await.unwrap(),
            }
        });
        let client = FunctionServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        TestServer {
            addr,
            http_addr,
            host,
            client,
            shutdown: Some(tx),
            task: Some(task),
            _data: data,
        }
    }

    pub fn channel_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    /// The instance pool counters of a task.
    pub fn pool(&self, task_id: &str) -> spearlet::pool::PoolStats {
        self.host
            .task(task_id)
            .expect("the task exists")
            .pool
            .stats()
    }

    pub async fn invoke(
        &self,
        req: pb::InvokeFunctionRequest,
    ) -> Result<pb::InvokeFunctionResponse, tonic::Status> {
        self.client
            .clone()
            .invoke_function(req)
            .await
            .map(|r| r.into_inner())
    }

    /// `GetHealth`'s `system_info` details.
    pub async fn health_info(&self) -> std::collections::HashMap<String, String> {
        self.client
            .clone()
            .get_health(pb::GetHealthRequest {
                include_details: true,
            })
            .await
            .unwrap()
            .into_inner()
            .details
            .unwrap()
            .system_info
    }
}

pub fn spec(artifact: Artifact) -> pb::ArtifactSpec {
    pb::ArtifactSpec {
        location: artifact.path().to_str().unwrap().to_owned(),
        artifact_type: "native".into(),
        ..Default::default()
    }
}

/// NEW_TASK `name` from `artifact`, SYNC.
pub fn new_task(name: &str, artifact: Artifact, function: &str) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        invocation_type: pb::InvocationType::NewTask.into(),
        task_name: name.into(),
        artifact_spec: Some(spec(artifact)),
        function_name: function.into(),
        execution_mode: pb::ExecutionMode::Sync.into(),
        ..Default::default()
    }
}

/// EXISTING_TASK `task_id`, SYNC.
pub fn existing(task_id: &str, function: &str) -> pb::InvokeFunctionRequest {
    pb::InvokeFunctionRequest {
        invocation_type: pb::InvocationType::ExistingTask.into(),
        task_id: task_id.into(),
        function_name: function.into(),
        execution_mode: pb::ExecutionMode::Sync.into(),
        ..Default::default()
    }
}

pub fn with_params(
    mut req: pb::InvokeFunctionRequest,
    params: &[(&str, Any)],
) -> pb::InvokeFunctionRequest {
    req.parameters = params
        .iter()
        .map(|(name, value)| pb::FunctionParameter {
            name: (*name).into(),
            value: Some(value.clone()),
            required: true,
            ..Default::default()
        })
        .collect();
    req
}

pub fn with_context(
    mut req: pb::InvokeFunctionRequest,
    timeout_ms: i64,
    max_retries: i32,
) -> pb::InvokeFunctionRequest {
    req.context = Some(pb::ExecutionContext {
        timeout_ms,
        max_retries,
        ..Default::default()
    });
    req
}

pub fn with_metadata(
    mut req: pb::InvokeFunctionRequest,
    pairs: &[(&str, &str)],
) -> pb::InvokeFunctionRequest {
    req.invocation_metadata = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect::<HashMap<_, _>>();
    req
}

const WRAPPER: &str = "type.googleapis.com/google.protobuf.";

pub fn any_i64(v: i64) -> Any {
    Any {
        type_url: format!("{WRAPPER}Int64Value"),
        value: v.encode_to_vec(),
    }
}

pub fn any_f64(v: f64) -> Any {
    Any {
        type_url: format!("{WRAPPER}DoubleValue"),
        value: v.encode_to_vec(),
    }
}

pub fn any_str(v: &str) -> Any {
    Any {
        type_url: format!("{WRAPPER}StringValue"),
        value: v.to_owned().encode_to_vec(),
    }
}

pub fn any_bool(v: bool) -> Any {
    Any {
        type_url: format!("{WRAPPER}BoolValue"),
        value: v.encode_to_vec(),
    }
}

pub fn any_bytes(v: &[u8]) -> Any {
    Any {
        type_url: format!("{WRAPPER}BytesValue"),
        value: v.to_vec().encode_to_vec(),
    }
}

pub fn any_i32(v: i32) -> Any {
    Any {
        type_url: format!("{WRAPPER}Int32Value"),
        value: v.encode_to_vec(),
    }
}

/// The i64 in a result.
pub fn result_i64(resp: &pb::InvokeFunctionResponse) -> i64 {
    let any = resp
        .result
        .as_ref()
        .and_then(|r| r.result.as_ref())
        .expect("a result value");
    assert_eq!(any.type_url, format!("{WRAPPER}Int64Value"));
    i64::decode(any.value.as_slice()).unwrap()
}

pub fn result_str(resp: &pb::InvokeFunctionResponse) -> String {
    let any = resp
        .result
        .as_ref()
        .and_then(|r| r.result.as_ref())
        .expect("a result value");
    assert_eq!(any.type_url, format!("{WRAPPER}StringValue"));
    String::decode(any.value.as_slice()).unwrap()
}

pub fn status_of(resp: &pb::InvokeFunctionResponse) -> pb::ExecutionStatus {
    pb::ExecutionStatus::try_from(resp.result.as_ref().unwrap().status).unwrap()
}

pub fn kind(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get(spearlet::api::ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Waits (yielding, never sleeping) until the execution reaches `status`;
/// fails if it ends in another one.
pub async fn until(server: &TestServer, id: &str, status: spearlet::exec::ExecutionStatus) {
    loop {
        let now = server.host.execution(id).unwrap().status;
        if now == status {
            return;
        }
        assert!(!now.is_final(), "{id} ended {now}, expected {status}");
        crate::helpers::yield_waiting("the execution to reach the status").await;
    }
}

/// Waits (yielding, never sleeping) until the execution ends.
pub async fn until_final(server: &TestServer, id: &str) -> spearlet::exec::ExecutionSnapshot {
    loop {
        let e = server.host.execution(id).unwrap();
        if e.status.is_final() {
            return e;
        }
        crate::helpers::yield_waiting("the execution to end").await;
    }
}
