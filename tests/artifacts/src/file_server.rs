//! A real HTTP file server on 127.0.0.1:0 for artifact tests: counts
//! requests, can fail the next N with 503, and can hold responses behind a
//! gate until the test opens it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Default)]
struct Shared {
    files: Mutex<HashMap<String, Vec<u8>>>,
    requests: Mutex<HashMap<String, usize>>,
    fail_next: AtomicUsize,
    gate: Option<watch::Receiver<bool>>,
}

/// The server; [`FileServer::stop`] shuts it down cleanly.
#[derive(Debug)]
pub struct FileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    gate: watch::Sender<bool>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Starts serving on `127.0.0.1:0`.
    pub async fn start() -> Self {
        let (gate, gate_rx) = watch::channel(true);
        let shared = Arc::new(Shared {
            gate: Some(gate_rx),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop.await;
                })
                .await
                .unwrap();
        });
        FileServer {
            addr,
            shared,
            gate,
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// Serves `bytes` at `path`.
    pub fn serve(&self, path: &str, bytes: Vec<u8>) {
        self.shared
            .files
            .lock()
            .unwrap()
            .insert(path.to_owned(), bytes);
    }

    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received for `path` so far.
    pub fn requests(&self, path: &str) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The next `n` requests get 503.
    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    /// Holds every response until [`FileServer::open_gate`].
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    /// Releases held responses and stops holding new ones.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Shuts down gracefully and waits for the server task.
    pub async fn stop(mut self) {
        self.open_gate();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    *shared
        .requests
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default() += 1;
    if let Some(mut gate) = shared.gate.clone() {
        let _ = gate.wait_for(|open| *open).await;
    }
    let failing = shared
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }
    match shared.files.lock().unwrap().get(&path) {
        Some(bytes) => Response::new(Body::from(bytes.clone())),
        None => status(StatusCode::NOT_FOUND),
    }
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}
