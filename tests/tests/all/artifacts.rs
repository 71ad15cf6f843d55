//! The artifact pipeline: locations, downloads, verification, the cache.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spearlet::artifact::{ArtifactSpec, ArtifactStore, LoadedStats};
use spearlet::config::ArtifactConfig;
use spearlet::digest::Sha256Digest;
use spearlet::exec::ExecutionStatus;
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::isolate::ISOLATION_KEY;
use spearlet::{Config, Error, Host, Value};
use spearlet_test_artifacts::{Artifact, FileServer};
use tempfile::TempDir;

use crate::helpers::{call, instance, yield_waiting};

/// A plugin's bytes with `tag` appended: loads like the original, but has a
/// digest no other test has loaded into this process.
fn variant(artifact: Artifact, tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(artifact.path()).unwrap();
    bytes.extend_from_slice(format!("spearlet-test-variant:{tag}").as_bytes());
    bytes
}

fn digest(bytes: &[u8]) -> String {
    Sha256Digest::of(bytes).to_hex()
}

struct Fixture {
    data: TempDir,
    root: TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            data: tempfile::tempdir().unwrap(),
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> Config {
        Config {
            data_dir: self.data.path().to_owned(),
            artifacts: ArtifactConfig {
                roots: vec![self.root.path().to_owned()],
                retry_base_delay: Duration::from_millis(1),
                download_attempts: 3,
                // The test file servers listen there.
                allowed_hosts: vec!["127.0.0.1".to_owned()],
                ..ArtifactConfig::default()
            },
            ..Config::default()
        }
    }

    fn store(&self) -> ArtifactStore {
        ArtifactStore::new(&self.config()).unwrap()
    }

    fn store_with(&self, edit: impl FnOnce(&mut Config)) -> ArtifactStore {
        let mut config = self.config();
        edit(&mut config);
        ArtifactStore::new(&config).unwrap()
    }

    /// Writes `bytes` under the artifact root.
    fn local(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.root.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn cached_files(&self) -> usize {
        let dir = self.data.path().join("artifacts/sha256");
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    fn temp_files(&self) -> usize {
        std::fs::read_dir(self.data.path().join("artifacts/tmp"))
            .unwrap()
            .count()
    }
}

#[tokio::test]
async fn an_http_artifact_is_downloaded_verified_cached_and_loaded() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Math, "http-ok");
    server.serve("/math.so", bytes.clone());
    let spec = ArtifactSpec::at(server.url("/math.so"))
        .with_checksum(format!("sha256:{}", digest(&bytes)));
    let plugin = fx.store().load(&spec).await.unwrap();
    assert_eq!(plugin.name(), "math");
    assert_eq!(plugin.digest().to_hex(), digest(&bytes));
    let mut m = instance(&plugin);
    assert_eq!(
        call(&mut m, "add", &[("a", Value::I64(1)), ("b", Value::I64(2))]).unwrap(),
        Value::I64(3)
    );
    assert_eq!(server.requests("/math.so"), 1);
    assert_eq!(fx.cached_files(), 1);
    let cached = fx
        .data
        .path()
        .join(format!("artifacts/sha256/{}.so", digest(&bytes)));
    assert!(std::fs::metadata(cached).unwrap().permissions().readonly());

    // Loaded already: a second request does no I/O at all.
    fx.store().load(&spec).await.unwrap();
    assert_eq!(server.requests("/math.so"), 1);
    server.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Echo, "retry");
    server.serve("/echo.so", bytes.clone());
    server.fail_next(2);
    let spec = ArtifactSpec::at(server.url("/echo.so")).with_checksum(digest(&bytes));
    let plugin = fx.store().load(&spec).await.unwrap();
    assert_eq!(plugin.name(), "echo");
    assert_eq!(server.requests("/echo.so"), 3, "two 503s, then success");
    server.stop().await;
}

#[tokio::test]
async fn the_final_error_lists_every_attempt() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    server.serve("/echo.so", variant(Artifact::Echo, "always-503"));
    server.fail_next(100);
    let spec = ArtifactSpec::at(server.url("/echo.so")).with_checksum("ab".repeat(32));
    match fx.store().load(&spec).await {
        Err(Error::DownloadFailed { attempts, .. }) => {
            assert_eq!(attempts.len(), 3, "{attempts:?}");
            assert!(attempts.iter().all(|a| a.contains("503")), "{attempts:?}");
        }
        other => panic!("expected DownloadFailed, got {other:?}"),
    }
    assert_eq!(server.requests("/echo.so"), 3);
    assert_eq!(fx.temp_files(), 0);
    server.stop().await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let spec = ArtifactSpec::at(server.url("/missing.so")).with_checksum("ab".repeat(32));
    match fx.store().load(&spec).await {
        Err(Error::DownloadFailed { attempts, .. }) => {
            assert_eq!(attempts.len(), 1, "{attempts:?}");
            assert!(
                attempts[0].contains("404") && attempts[0].contains("not retried"),
                "{attempts:?}"
            );
        }
        other => panic!("expected DownloadFailed, got {other:?}"),
    }
    assert_eq!(server.requests("/missing.so"), 1);
    server.stop().await;
}

#[tokio::test]
async fn connection_errors_are_retried() {
    let fx = Fixture::new();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let spec = ArtifactSpec::at(format!("http://{closed}/p.so")).with_checksum("ab".repeat(32));
    match fx.store().load(&spec).await {
        Err(Error::DownloadFailed { attempts, .. }) => {
            assert_eq!(attempts.len(), 3, "{attempts:?}")
        }
        other => panic!("expected DownloadFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_checksum_mismatch_over_http_is_final_and_leaves_nothing_behind() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Echo, "mismatch");
    server.serve("/echo.so", bytes.clone());
    let wrong = "cd".repeat(32);
    let spec = ArtifactSpec::at(server.url("/echo.so")).with_checksum(&wrong);
    match fx.store().load(&spec).await {
        Err(Error::ChecksumMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, digest(&bytes));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert_eq!(
        server.requests("/echo.so"),
        1,
        "a mismatch is never retried"
    );
    assert_eq!((fx.cached_files(), fx.temp_files()), (0, 0));
    server.stop().await;
}

#[tokio::test]
async fn a_local_checksum_mismatch_is_refused() {
    let fx = Fixture::new();
    let path = fx.local("echo.so", &variant(Artifact::Echo, "local-mismatch"));
    let spec = ArtifactSpec::at(path).with_checksum("sha256:".to_owned() + &"00".repeat(32));
    assert!(matches!(
        fx.store().load(&spec).await,
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[tokio::test]
async fn local_artifacts_load_with_or_without_checksum_unless_required() {
    let fx = Fixture::new();
    let bytes = variant(Artifact::Counter, "local");
    let path = fx.local("counter.so", &bytes);
    let plugin = fx.store().load(&ArtifactSpec::at(&path)).await.unwrap();
    assert_eq!(
        plugin.digest().to_hex(),
        digest(&bytes),
        "hashed and recorded"
    );
    let by_url =
        ArtifactSpec::at(format!("file://{path}")).with_checksum(digest(&bytes).to_uppercase());
    assert!(Arc::ptr_eq(
        &fx.store().load(&by_url).await.unwrap(),
        &plugin
    ));

    let strict = fx.store_with(|c| c.artifacts.require_local_checksum = true);
    assert!(matches!(
        strict.load(&ArtifactSpec::at(&path)).await,
        Err(Error::ChecksumRequired { .. })
    ));
}

#[tokio::test]
async fn remote_artifacts_need_a_checksum() {
    let fx = Fixture::new();
    let spec = ArtifactSpec::at("http://127.0.0.1:9/p.so");
    assert!(matches!(
        fx.store().load(&spec).await,
        Err(Error::ChecksumRequired { .. })
    ));
    let bad = spec.with_checksum("not-hex");
    assert!(matches!(
        fx.store().load(&bad).await,
        Err(Error::InvalidChecksum(_))
    ));
}

#[tokio::test]
async fn paths_escaping_the_roots_are_denied() {
    let fx = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("evil.so");
    std::fs::write(&target, variant(Artifact::Echo, "outside")).unwrap();
    let root = fx.root.path();

    let dotdot = format!("{}/../{}", root.display(), relative_from(root, &target));
    let link = root.join("link.so");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    for location in [dotdot, link.to_str().unwrap().to_owned()] {
        match fx.store().load(&ArtifactSpec::at(&location)).await {
            Err(Error::PermissionDenied { reason, .. }) => {
                assert!(reason.contains("outside the artifact roots"), "{reason}");
            }
            other => panic!("{location}: expected PermissionDenied, got {other:?}"),
        }
    }

    // A symlink that stays inside a root is fine.
    let inner = fx.local("real.so", &variant(Artifact::Echo, "inside"));
    std::os::unix::fs::symlink(&inner, root.join("alias.so")).unwrap();
    let alias = root.join("alias.so");
    assert!(fx
        .store()
        .load(&ArtifactSpec::at(alias.to_str().unwrap()))
        .await
        .is_ok());

    let no_roots = fx.store_with(|c| c.artifacts.roots.clear());
    match no_roots.load(&ArtifactSpec::at(inner)).await {
        Err(Error::PermissionDenied { reason, .. }) => {
            assert!(reason.contains("no artifact roots"), "{reason}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
}

fn relative_from(root: &Path, target: &Path) -> String {
    // `<root>/../<outside>/evil.so`, with the outside dir named from the root's parent.
    let parent = root.parent().unwrap();
    target
        .strip_prefix(parent)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn truncated_and_foreign_libraries_get_format_errors() {
    let fx = Fixture::new();
    let whole = std::fs::read(Artifact::Echo.path()).unwrap();
    let truncated = fx.local("truncated.so", &whole[..whole.len() / 2]);
    match fx.store().load(&ArtifactSpec::at(truncated)).await {
        Err(Error::ArtifactFormat { reason, .. }) => {
            assert!(reason.starts_with("truncated"), "{reason}")
        }
        other => panic!("expected ArtifactFormat, got {other:?}"),
    }

    let mut foreign = whole[..64].to_vec();
    let other_machine: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    foreign[18..20].copy_from_slice(&other_machine.to_le_bytes());
    let foreign = fx.local("foreign.so", &foreign);
    match fx.store().load(&ArtifactSpec::at(foreign)).await {
        Err(Error::ArtifactFormat { reason, .. }) => {
            assert!(reason.starts_with("built for "), "{reason}")
        }
        other => panic!("expected ArtifactFormat, got {other:?}"),
    }
}

#[tokio::test]
async fn non_native_artifact_types_and_unknown_schemes_are_refused() {
    let fx = Fixture::new();
    let wasm = ArtifactSpec {
        artifact_type: "wasm".into(),
        ..ArtifactSpec::at(fx.local("x.so", b"x"))
    };
    assert!(matches!(
        fx.store().load(&wasm).await,
        Err(Error::UnsupportedArtifactType { .. })
    ));
    let s3 = ArtifactSpec::at("s3://bucket/x.so");
    assert!(matches!(
        fx.store().load(&s3).await,
        Err(Error::UnsupportedLocation { .. })
    ));
}

#[tokio::test]
async fn sms_files_come_from_the_sms_file_api() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Echo, "sms");
    server.serve("/api/v1/files/file-123", bytes.clone());
    let spec = ArtifactSpec::at("smsfile://file-123").with_checksum(digest(&bytes));
    assert!(matches!(
        fx.store().load(&spec).await,
        Err(Error::SmsNotConfigured { .. })
    ));

    // The configured SMS needs no place in `artifacts.allowed_hosts`...
    let store = fx.store_with(|c| {
        c.artifacts.allowed_hosts.clear();
        c.sms.http = Some(server.base_url().parse().unwrap());
    });
    assert_eq!(store.load(&spec).await.unwrap().name(), "echo");
    let seed_era = ArtifactSpec::at("sms+file://file-123").with_checksum(digest(&bytes));
    assert_eq!(store.load(&seed_era).await.unwrap().name(), "echo");
    assert_eq!(server.requests("/api/v1/files/file-123"), 1);
    // ...for its files only: the same host named by an http:// location is not allowed.
    let direct = ArtifactSpec::at(server.url("/api/v1/files/file-123"))
        .with_checksum(digest(&variant(Artifact::Echo, "sms-direct")));
    assert!(matches!(
        store.load(&direct).await,
        Err(Error::HostNotAllowed { .. })
    ));
    assert_eq!(server.requests("/api/v1/files/file-123"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_plugin_other_than_the_one_named_is_refused() {
    let fx = Fixture::new();
    let path = fx.local("echo.so", &variant(Artifact::Echo, "identity"));
    let mut spec = ArtifactSpec::at(path);
    spec.metadata.insert("plugin_name".into(), "math".into());
    match fx.store().load(&spec).await {
        Err(Error::PluginIdentityMismatch {
            field,
            expected,
            actual,
        }) => {
            assert_eq!(
                (field, expected.as_str(), actual.as_str()),
                ("name", "math", "echo")
            );
        }
        other => panic!("expected PluginIdentityMismatch, got {other:?}"),
    }
    spec.metadata.insert("plugin_name".into(), "echo".into());
    spec.version = "9.9.9".into();
    assert!(
        fx.store().load(&spec).await.is_ok(),
        "ArtifactSpec.version is a label, as SPEAR's clients use it"
    );
    spec.metadata
        .insert("plugin_version".into(), "9.9.9".into());
    assert!(matches!(
        fx.store().load(&spec).await,
        Err(Error::PluginIdentityMismatch {
            field: "version",
            ..
        })
    ));
}

#[tokio::test]
async fn oversized_downloads_are_refused_without_retry() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Echo, "large");
    server.serve("/big.so", bytes.clone());
    let store = fx.store_with(|c| c.artifacts.max_size_bytes = 1024);
    let spec = ArtifactSpec::at(server.url("/big.so")).with_checksum(digest(&bytes));
    match store.load(&spec).await {
        Err(Error::ArtifactTooLarge { limit, .. }) => assert_eq!(limit, 1024),
        other => panic!("expected ArtifactTooLarge, got {other:?}"),
    }
    assert_eq!(server.requests("/big.so"), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_digest_download_once() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Stream, "single-flight");
    server.serve("/stream.so", bytes.clone());
    server.close_gate();
    let store = Arc::new(fx.store());
    let spec = ArtifactSpec::at(server.url("/stream.so")).with_checksum(digest(&bytes));
    let first = tokio::spawn({
        let (store, spec) = (Arc::clone(&store), spec.clone());
        async move { store.load(&spec).await }
    });
    let second = tokio::spawn({
        let (store, spec) = (Arc::clone(&store), spec.clone());
        async move { store.load(&spec).await }
    });
    // Both have missed the cache (and so joined the download) while the
    // server holds the one response back.
    while store.cache().stats().misses < 2 || server.requests("/stream.so") < 1 {
        crate::helpers::yield_waiting("both fetches to join one download").await;
    }
    server.open_gate();
    let (a, b) = (
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
    );
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(server.requests("/stream.so"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_host_not_allowed_is_refused_before_any_connection() {
    let fx = Fixture::new();
    let server = FileServer::start().await;
    let bytes = variant(Artifact::Echo, "not-allowed");
    server.serve("/echo.so", bytes.clone());
    let spec = ArtifactSpec::at(server.url("/echo.so")).with_checksum(digest(&bytes));
    let port = server.base_url().rsplit(':').next().unwrap().to_owned();
    // By default no host is allowed; a list without this host (or this
    // port) does not allow it either.
    let lists: [&[&str]; 3] = [&[], &["*.example.test", "localhost"], &["127.0.0.1:1"]];
    for list in lists {
        let store = fx.store_with(|c| {
            c.artifacts.allowed_hosts = list.iter().map(|h| (*h).to_owned()).collect()
        });
        let refused = store.load(&spec).await.unwrap_err();
        match &refused {
            Error::HostNotAllowed { location, host } => {
                assert_eq!(location, &spec.location);
                assert_eq!(host, &format!("127.0.0.1:{port}"));
            }
            other => panic!("{list:?}: expected HostNotAllowed, got {other:?}"),
        }
        let message = refused.to_string();
        assert!(
            message.contains(&format!("127.0.0.1:{port}"))
                && message.contains("artifacts.allowed_hosts"),
            "{message}"
        );
        let status = tonic::Status::from(refused);
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            status.metadata().get("spearlet-error-kind").unwrap(),
            "host_not_allowed"
        );
        assert_eq!(store.telemetry().refused.get("host_not_allowed"), Some(&1));
    }
    assert_eq!(
        server.requests("/echo.so"),
        0,
        "no request reached the server"
    );

    // Listed with its port, it is fetched.
    let store = fx.store_with(|c| c.artifacts.allowed_hosts = vec![format!("127.0.0.1:{port}")]);
    assert_eq!(store.load(&spec).await.unwrap().name(), "echo");
    assert_eq!(server.requests("/echo.so"), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_redirect_to_a_host_not_allowed_is_refused_before_following_it() {
    let fx = Fixture::new();
    let target = FileServer::start().await;
    let bytes = variant(Artifact::Echo, "redirected");
    target.serve("/echo.so", bytes.clone());
    // An allowed host that sends the client to `localhost`, which is not.
    let elsewhere = target.url("/echo.so").replace("127.0.0.1", "localhost");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        let app = axum::Router::new().fallback(move || {
            let elsewhere = elsewhere.clone();
            async move {
                axum::response::Response::builder()
                    .status(axum::http::StatusCode::FOUND)
                    .header(axum::http::header::LOCATION, elsewhere)
                    .body(axum::body::Body::empty())
                    .unwrap()
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let spec =
        ArtifactSpec::at(format!("http://{redirector}/echo.so")).with_checksum(digest(&bytes));
    match fx.store().load(&spec).await {
        Err(Error::HostNotAllowed { location, host }) => {
            assert_eq!(location, spec.location);
            assert!(host.starts_with("localhost:"), "{host}");
        }
        other => panic!("expected HostNotAllowed, got {other:?}"),
    }
    assert_eq!(
        target.requests("/echo.so"),
        0,
        "the redirect was not followed"
    );
    assert_eq!(fx.temp_files(), 0);
    let _ = stop.send(());
    serving.await.unwrap();
    target.stop().await;
}

/// Creates task `name` in the process tier from the plugin at `location`
/// by calling echo's `nop`; returns its id.
async fn process_task(host: &Host, name: &str, location: &str) -> String {
    let mut request = InvokeRequest::new(
        Target::NewTask {
            name: name.into(),
            description: String::new(),
            artifact: ArtifactSpec::at(location),
        },
        "nop",
    );
    request.metadata = BTreeMap::from([(ISOLATION_KEY.to_owned(), "process".to_owned())]);
    let out = host.invoke(request).await.expect("the task is created");
    assert_eq!(
        out.execution.status,
        ExecutionStatus::Completed,
        "{:?}",
        out.execution.error
    );
    out.task_id.to_string()
}

/// The files in the artifact cache under `data` this process holds open.
fn open_cached_files(data: &Path) -> Vec<String> {
    let cache = data
        .canonicalize()
        .unwrap()
        .join("artifacts/sha256")
        .to_string_lossy()
        .into_owned();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with(&cache))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_no_task_uses_are_let_go_past_the_bound_least_recently_used_first() {
    let fx = Fixture::new();
    let mut config = fx.config();
    config.artifacts.max_unused_loaded = 2;
    let host = Host::new(config).unwrap();
    // A task that stays: its plugin is in use, and never let go.
    let kept = fx.local("kept.so", &variant(Artifact::Echo, "lru-kept"));
    process_task(&host, "kept", &kept).await;
    let mut hexes = Vec::new();
    for n in 0..4 {
        let bytes = variant(Artifact::Echo, &format!("lru-{n}"));
        hexes.push(digest(&bytes));
        let location = fx.local(&format!("lru-{n}.so"), &bytes);
        let id = process_task(&host, &format!("lru-{n}"), &location).await;
        host.delete_task(&id, false, false).unwrap();
    }
    // Four deleted tasks' plugins, two kept: the two used last.
    let expected = LoadedStats {
        in_use: 1,
        unused: 2,
    };
    while host.artifacts().loaded() != expected {
        yield_waiting("the plugins past the bound to be let go").await;
    }
    let open = open_cached_files(fx.data.path());
    assert_eq!(open.len(), 3, "the kept task's and two unused: {open:?}");
    for hex in &hexes[..2] {
        assert!(
            !open.iter().any(|f| f.contains(hex.as_str())),
            "{hex} is closed: {open:?}"
        );
    }
    for hex in &hexes[2..] {
        assert!(
            open.iter().any(|f| f.contains(hex.as_str())),
            "{hex} is open: {open:?}"
        );
    }

    // A task created again on a plugin let go loads it again, and runs.
    let again = process_task(
        &host,
        "again",
        &fx.root.path().join("lru-0.so").to_string_lossy(),
    )
    .await;
    assert_eq!(
        host.artifacts().loaded(),
        LoadedStats {
            in_use: 2,
            unused: 2
        }
    );
    assert_eq!(open_cached_files(fx.data.path()).len(), 4);
    host.delete_task(&again, false, false).unwrap();
    // Its deletion makes three unused: the least recently used goes.
    while host.artifacts().loaded() != expected {
        yield_waiting("the least recently used plugin to be let go").await;
    }
    let open = open_cached_files(fx.data.path());
    assert!(
        !open.iter().any(|f| f.contains(hexes[2].as_str())),
        "{open:?}"
    );
    assert!(
        open.iter().any(|f| f.contains(hexes[0].as_str())),
        "{open:?}"
    );
}
