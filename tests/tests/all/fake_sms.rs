//! A stand-in for SPEAR's metadata server, for tests only: the
//! `sms.TaskService`, `sms.NodeService`, `sms.ExecutionRegistryService` and
//! `sms.InstanceRegistryService` calls spearlet makes, and the file API,
//! each on 127.0.0.1:0, recording what they receive. It answers
//! as SPEAR's SMS does where that matters: it assigns task ids, answers
//! GetTask of an unknown id with `found: false`, reads a ListTasks status
//! filter of 0 as "UNKNOWN only", refuses endpoints that are not route
//! names, answers a heartbeat from an unknown node with NOT_FOUND, refuses
//! reports missing the ids SPEAR requires, and keeps a report unless the
//! stored copy of its execution / instance has a larger `updated_at_ms`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use spearlet_proto::sms::execution_registry_service_server::{
    ExecutionRegistryService, ExecutionRegistryServiceServer,
};
use spearlet_proto::sms::instance_registry_service_server::{
    InstanceRegistryService, InstanceRegistryServiceServer,
};
use spearlet_proto::sms::node_service_server::{NodeService, NodeServiceServer};
use spearlet_proto::sms::task_service_server::{TaskService, TaskServiceServer};
use spearlet_proto::sms::{
    DeleteNodeRequest, DeleteNodeResponse, Execution, GetTaskRequest, GetTaskResponse,
    HeartbeatRequest, HeartbeatResponse, Instance, ListTasksRequest, ListTasksResponse, Node,
    RegisterNodeRequest, RegisterNodeResponse, RegisterTaskRequest, RegisterTaskResponse,
    ReportExecutionResponse, ReportInstanceResponse, Task, TaskStatus, UnregisterTaskRequest,
    UnregisterTaskResponse,
};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};

/// What the fake SMS holds and has seen.
#[derive(Debug, Default)]
pub struct Seen {
    pub nodes: HashMap<String, Node>,
    pub node_registrations: usize,
    pub heartbeats: Vec<HeartbeatRequest>,
    pub deleted_nodes: Vec<String>,
    pub tasks: BTreeMap<String, Task>,
    pub get_task_calls: usize,
    pub list_task_calls: usize,
    pub unregistered: Vec<(String, String)>,
    pub files: HashMap<String, Vec<u8>>,
    pub uploads: usize,
    pub downloads: usize,
    /// Every execution report received, in arrival order.
    pub executions: Vec<Execution>,
    /// Every instance report received, in arrival order.
    pub instances: Vec<Instance>,
    /// The copy kept per execution id (the largest `updated_at_ms`; last
    /// arrival wins on equal), as SPEAR's index keeps it.
    pub stored_executions: HashMap<String, Execution>,
    /// The copy kept per instance id.
    pub stored_instances: HashMap<String, Instance>,
}

#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Seen>,
    changed: Notify,
    /// Every gRPC call answers UNAVAILABLE.
    down: AtomicBool,
    /// Only the task calls answer UNAVAILABLE.
    tasks_down: AtomicBool,
    /// GetTask waits, unanswered, until this is cleared.
    hold_lookups: AtomicBool,
    released: Notify,
    next_id: AtomicUsize,
}

impl Shared {
    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap()
    }

    fn record<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let out = f(&mut self.seen());
        self.changed.notify_waiters();
        out
    }

    fn check_up(&self, task_call: bool) -> Result<(), Status> {
        if self.down.load(Ordering::SeqCst) || (task_call && self.tasks_down.load(Ordering::SeqCst))
        {
            return Err(Status::unavailable("fake SMS is down"));
        }
        Ok(())
    }
}

/// The running fake; [`FakeSms::stop`] shuts it down.
pub struct FakeSms {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    shared: Arc<Shared>,
    stops: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeSms {
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc, http) = (
            grpc_listener.local_addr().unwrap(),
            http_listener.local_addr().unwrap(),
        );
        let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
        let service = Fake(Arc::clone(&shared));
        let grpc_task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TaskServiceServer::new(service.clone()))
                .add_service(ExecutionRegistryServiceServer::new(service.clone()))
                .add_service(InstanceRegistryServiceServer::new(service.clone()))
                .add_service(NodeServiceServer::new(service))
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc_listener),
                    async {
                        let _ = grpc_stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(files)
            .with_state(Arc::clone(&shared));
        let http_task = tokio::spawn(async move {
            axum::serve(http_listener, app)
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .await
                .unwrap();
        });
        FakeSms {
            grpc,
            http,
            shared,
            stops: vec![grpc_stop, http_stop],
            tasks: vec![grpc_task, http_task],
        }
    }

    pub fn grpc_url(&self) -> url::Url {
        format!("http://{}", self.grpc).parse().unwrap()
    }

    pub fn http_url(&self) -> url::Url {
        format!("http://{}", self.http).parse().unwrap()
    }

    /// Points `config` at this SMS, with fast heartbeats.
    pub fn join(&self, config: &mut spearlet::Config) {
        config.sms.grpc = Some(self.grpc_url());
        config.sms.http = Some(self.http_url());
        config.sms.heartbeat_interval = Duration::from_millis(20);
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.shared.seen()
    }

    /// Every gRPC call fails with UNAVAILABLE while `down`.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// The task calls fail with UNAVAILABLE while `down`.
    pub fn set_tasks_down(&self, down: bool) {
        self.shared.tasks_down.store(down, Ordering::SeqCst);
    }

    /// GetTask leaves callers waiting while `hold`.
    pub fn hold_lookups(&self, hold: bool) {
        self.shared.hold_lookups.store(hold, Ordering::SeqCst);
        if !hold {
            self.shared.released.notify_waiters();
        }
    }

    /// Registers a task as another node would.
    pub fn insert_task(&self, task: Task) {
        self.shared
            .record(|s| s.tasks.insert(task.task_id.clone(), task));
    }

    /// Every execution report received, in arrival order.
    pub fn executions(&self) -> Vec<Execution> {
        self.seen().executions.clone()
    }

    /// Every instance report received, in arrival order.
    pub fn instances(&self) -> Vec<Instance> {
        self.seen().instances.clone()
    }

    /// The copy of execution `id` the SMS keeps (what GetExecution answers).
    pub fn execution(&self, id: &str) -> Option<Execution> {
        self.seen().stored_executions.get(id).cloned()
    }

    /// The copy of instance `id` the SMS keeps.
    pub fn instance(&self, id: &str) -> Option<Instance> {
        self.seen().stored_instances.get(id).cloned()
    }

    /// How many reports (executions and instances) were received so far.
    pub fn report_count(&self) -> usize {
        let seen = self.seen();
        seen.executions.len() + seen.instances.len()
    }

    /// Waits (bounded) until more than `after` reports were received; with
    /// `after = sms.report_count()` taken before the action, the next one.
    pub async fn next_report(&self, after: usize) {
        self.until("another report", |s| {
            s.executions.len() + s.instances.len() > after
        })
        .await;
    }

    /// Waits (bounded) until the stored copy of execution `id` satisfies
    /// `done` (e.g. `|e| e.status == ExecutionStatus::Completed as i32`).
    pub async fn until_execution(&self, id: &str, done: impl Fn(&Execution) -> bool) {
        self.until(&format!("execution {id} reported"), |s| {
            s.stored_executions.get(id).is_some_and(&done)
        })
        .await;
    }

    /// Waits until `done` holds of what was seen (bounded, so a broken
    /// host fails the test instead of hanging it).
    pub async fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(&self.seen()) {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            panic!("the fake SMS never saw {what}: {:#?}", self.seen());
        }
    }

    pub async fn stop(mut self) {
        self.hold_lookups(false);
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }
}

#[derive(Debug, Clone)]
struct Fake(Arc<Shared>);

#[tonic::async_trait]
impl TaskService for Fake {
    async fn register_task(
        &self,
        request: GrpcRequest<RegisterTaskRequest>,
    ) -> Result<GrpcResponse<RegisterTaskResponse>, Status> {
        self.0.check_up(true)?;
        let req = request.into_inner();
        if !req
            .endpoint
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Status::invalid_argument(
                "endpoint must match ^[A-Za-z0-9_-]+$",
            ));
        }
        let n = self.0.next_id.fetch_add(1, Ordering::SeqCst);
        let task_id = format!("00000000-0000-4000-8000-{n:012}");
        let task = Task {
            task_id: task_id.clone(),
            name: req.name,
            description: req.description,
            status: TaskStatus::Registered.into(),
            priority: req.priority,
            node_uuid: req.node_uuid,
            endpoint: req.endpoint,
            version: req.version,
            capabilities: req.capabilities,
            metadata: req.metadata,
            config: req.config,
            executable: req.executable,
            ..Task::default()
        };
        self.0
            .record(|s| s.tasks.insert(task_id.clone(), task.clone()));
        Ok(GrpcResponse::new(RegisterTaskResponse {
            success: true,
            message: "Task registered successfully".into(),
            task_id,
            task: Some(task),
        }))
    }

    async fn list_tasks(
        &self,
        request: GrpcRequest<ListTasksRequest>,
    ) -> Result<GrpcResponse<ListTasksResponse>, Status> {
        self.0.check_up(true)?;
        let req = request.into_inner();
        let limit = if req.limit <= 0 {
            100
        } else {
            req.limit as usize
        };
        let offset = req.offset.max(0) as usize;
        let (tasks, total) = self.0.record(|s| {
            s.list_task_calls += 1;
            let all: Vec<Task> = s
                .tasks
                .values()
                .filter(|t| req.status_filter < 0 || t.status == req.status_filter)
                .filter(|t| req.node_uuid.is_empty() || t.node_uuid == req.node_uuid)
                .cloned()
                .collect();
            let total = s.tasks.len();
            (all.into_iter().skip(offset).take(limit).collect(), total)
        });
        Ok(GrpcResponse::new(ListTasksResponse {
            tasks,
            total_count: total as i32,
        }))
    }

    async fn get_task(
        &self,
        request: GrpcRequest<GetTaskRequest>,
    ) -> Result<GrpcResponse<GetTaskResponse>, Status> {
        self.0.check_up(true)?;
        let id = request.into_inner().task_id;
        loop {
            let released = self.0.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.0.hold_lookups.load(Ordering::SeqCst) {
                break;
            }
            released.await;
        }
        let task = self.0.record(|s| {
            s.get_task_calls += 1;
            s.tasks.get(&id).cloned()
        });
        Ok(GrpcResponse::new(GetTaskResponse {
            found: task.is_some(),
            task,
        }))
    }

    async fn unregister_task(
        &self,
        request: GrpcRequest<UnregisterTaskRequest>,
    ) -> Result<GrpcResponse<UnregisterTaskResponse>, Status> {
        self.0.check_up(true)?;
        let req = request.into_inner();
        let found = self.0.record(|s| {
            s.unregistered
                .push((req.task_id.clone(), req.reason.clone()));
            s.tasks.remove(&req.task_id).is_some()
        });
        Ok(GrpcResponse::new(UnregisterTaskResponse {
            success: found,
            message: if found {
                "unregistered"
            } else {
                "task not found"
            }
            .into(),
            task_id: req.task_id,
        }))
    }
}

#[tonic::async_trait]
impl NodeService for Fake {
    async fn register_node(
        &self,
        request: GrpcRequest<RegisterNodeRequest>,
    ) -> Result<GrpcResponse<RegisterNodeResponse>, Status> {
        self.0.check_up(false)?;
        let node = request
            .into_inner()
            .node
            .ok_or_else(|| Status::invalid_argument("Node is required"))?;
        let uuid = node.uuid.clone();
        self.0.record(|s| {
            s.node_registrations += 1;
            s.nodes.insert(uuid.clone(), node);
        });
        Ok(GrpcResponse::new(RegisterNodeResponse {
            success: true,
            message: "Node registered successfully".into(),
            node_uuid: uuid,
        }))
    }

    async fn heartbeat(
        &self,
        request: GrpcRequest<HeartbeatRequest>,
    ) -> Result<GrpcResponse<HeartbeatResponse>, Status> {
        self.0.check_up(false)?;
        let req = request.into_inner();
        let known = self.0.record(|s| {
            let known = s.nodes.contains_key(&req.uuid);
            if known {
                s.heartbeats.push(req.clone());
            }
            known
        });
        if !known {
            return Err(Status::not_found(format!("node {} not found", req.uuid)));
        }
        Ok(GrpcResponse::new(HeartbeatResponse {
            success: true,
            message: "Heartbeat received".into(),
            server_timestamp: 0,
        }))
    }

    async fn delete_node(
        &self,
        request: GrpcRequest<DeleteNodeRequest>,
    ) -> Result<GrpcResponse<DeleteNodeResponse>, Status> {
        self.0.check_up(false)?;
        let uuid = request.into_inner().uuid;
        self.0.record(|s| {
            s.nodes.remove(&uuid);
            s.deleted_nodes.push(uuid);
        });
        Ok(GrpcResponse::new(DeleteNodeResponse {
            success: true,
            message: "Node deleted successfully".into(),
        }))
    }
}

/// Keeps `incoming` in `stored` unless the stored copy is later; says
/// whether it was kept and the stored copy's `updated_at_ms`.
fn keep<T: Clone>(
    stored: &mut HashMap<String, T>,
    id: &str,
    incoming: &T,
    updated_at: impl Fn(&T) -> i64,
) -> (bool, i64) {
    let at = updated_at(incoming);
    match stored.get(id) {
        Some(old) if updated_at(old) > at => (false, updated_at(old)),
        _ => {
            stored.insert(id.to_owned(), incoming.clone());
            (true, at)
        }
    }
}

#[tonic::async_trait]
impl ExecutionRegistryService for Fake {
    async fn report_execution(
        &self,
        request: GrpcRequest<Execution>,
    ) -> Result<GrpcResponse<ReportExecutionResponse>, Status> {
        self.0.check_up(false)?;
        let execution = request.into_inner();
        for (field, value) in [
            ("execution_id", &execution.execution_id),
            ("task_id", &execution.task_id),
            ("node_uuid", &execution.node_uuid),
            ("instance_id", &execution.instance_id),
        ] {
            if value.is_empty() {
                return Err(Status::invalid_argument(format!("{field} is required")));
            }
        }
        let (accepted, stored_updated_at_ms) = self.0.record(|s| {
            s.executions.push(execution.clone());
            // As SPEAR's SMS: every execution report also files its
            // instance as serving it, stamped with the SMS's own clock —
            // which is why a node must clear the instance afterwards.
            let now = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap();
            let serving = Instance {
                instance_id: execution.instance_id.clone(),
                task_id: execution.task_id.clone(),
                node_uuid: execution.node_uuid.clone(),
                status: spearlet_proto::sms::InstanceStatus::Running.into(),
                updated_at_ms: now,
                last_seen_ms: now,
                current_execution_id: execution.execution_id.clone(),
                ..Instance::default()
            };
            s.stored_instances
                .insert(serving.instance_id.clone(), serving);
            keep(
                &mut s.stored_executions,
                &execution.execution_id,
                &execution,
                |e| e.updated_at_ms,
            )
        });
        Ok(GrpcResponse::new(ReportExecutionResponse {
            accepted,
            stored_updated_at_ms,
        }))
    }
}

#[tonic::async_trait]
impl InstanceRegistryService for Fake {
    async fn report_instance(
        &self,
        request: GrpcRequest<Instance>,
    ) -> Result<GrpcResponse<ReportInstanceResponse>, Status> {
        self.0.check_up(false)?;
        let instance = request.into_inner();
        for (field, value) in [
            ("instance_id", &instance.instance_id),
            ("task_id", &instance.task_id),
            ("node_uuid", &instance.node_uuid),
        ] {
            if value.is_empty() {
                return Err(Status::invalid_argument(format!("{field} is required")));
            }
        }
        let (accepted, stored_updated_at_ms) = self.0.record(|s| {
            s.instances.push(instance.clone());
            keep(
                &mut s.stored_instances,
                &instance.instance_id,
                &instance,
                |i| i.updated_at_ms,
            )
        });
        Ok(GrpcResponse::new(ReportInstanceResponse {
            accepted,
            stored_updated_at_ms,
        }))
    }
}

/// The file API: `POST /api/v1/files` and `GET /api/v1/files/{id}`.
async fn files(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let Some(id) = path.strip_prefix("/api/v1/files") else {
        return status(StatusCode::NOT_FOUND);
    };
    match (request.method().clone(), id.trim_start_matches('/')) {
        (Method::POST, "") => {
            let name = request
                .headers()
                .get("x-file-name")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let Ok(bytes) = axum::body::to_bytes(request.into_body(), 64 << 20).await else {
                return status(StatusCode::BAD_REQUEST);
            };
            let id = format!("file-{}", shared.next_id.fetch_add(1, Ordering::SeqCst));
            shared.record(|s| {
                s.uploads += 1;
                s.files.insert(id.clone(), bytes.to_vec());
            });
            Response::new(Body::from(format!(
                r#"{{"success": true, "id": "{id}", "name": "{name}", "uri": "smsfile://{id}"}}"#
            )))
        }
        (Method::GET, id) => match shared.record(|s| {
            s.downloads += 1;
            s.files.get(id).cloned()
        }) {
            Some(bytes) => Response::new(Body::from(bytes)),
            None => status(StatusCode::NOT_FOUND),
        },
        _ => status(StatusCode::METHOD_NOT_ALLOWED),
    }
}

fn status(code: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = code;
    response
}
