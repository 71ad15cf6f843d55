//! The node: registered when it starts, heartbeats, the same identity
//! after a restart, an SMS that is down at start, and leaving when stopped.

use crate::fake_sms::FakeSms;
use crate::grpc_util::TestServer;

#[tokio::test]
async fn the_node_registers_heartbeats_and_leaves_when_stopped() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    let uuid = server.host.sms().unwrap().node_uuid().to_owned();
    sms.until("two heartbeats", |s| s.heartbeats.len() >= 2)
        .await;
    {
        let seen = sms.seen();
        let node = &seen.nodes[&uuid];
        assert_eq!(
            (node.ip_address.as_str(), node.port, node.status.as_str()),
            ("127.0.0.1", i32::from(server.addr.port()), "online")
        );
        // SPEAR falls back to `metadata["http_port"]` when `http_port` is 0.
        match node.http_port {
            0 => assert!(!node.metadata.contains_key("http_port")),
            port => assert_eq!(node.metadata["http_port"], port.to_string()),
        }
        assert_eq!(node.metadata["kind"], "native-plugins");
        assert_eq!(node.metadata["version"], env!("CARGO_PKG_VERSION"));
        assert!(node.metadata.contains_key("plugin_abi"));
        let beat = &seen.heartbeats[0];
        assert_eq!(beat.uuid, uuid);
        assert_eq!(beat.health_info["tasks"], "0");
        assert_eq!(beat.health_info["status"], "serving");
    }
    let info = server.health_info().await;
    assert_eq!(info["sms"], "registered");
    assert_eq!(info["sms_node_uuid"], uuid);
    assert!(info.contains_key("sms_last_heartbeat"));

    server.stop().await;
    let deleted = sms.seen().deleted_nodes.clone();
    assert_eq!(deleted, [uuid], "a graceful stop deletes the node");
    sms.stop().await;
}

#[tokio::test]
async fn an_advertised_host_name_is_registered_as_an_ip() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| {
        sms.join(c);
        c.sms.advertise = Some("localhost:50123".to_owned());
    })
    .await;
    let uuid = server.host.sms().unwrap().node_uuid().to_owned();
    sms.until("the node registered", |s| s.nodes.contains_key(&uuid))
        .await;
    let node = sms.seen().nodes[&uuid].clone();
    let ip: std::net::IpAddr = node
        .ip_address
        .parse()
        .unwrap_or_else(|_| panic!("`{}` is not a literal IP", node.ip_address));
    assert!(ip.is_loopback(), "{ip}");
    assert_eq!((node.port, node.status.as_str()), (50123, "online"));
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn a_restart_is_the_same_node() {
    let sms = FakeSms::start().await;
    let data = tempfile::tempdir().unwrap();
    let host = |dir: &std::path::Path| {
        let mut config = crate::helpers::config_in(dir);
        sms.join(&mut config);
        spearlet::Host::new(config).unwrap()
    };
    let first = host(data.path()).sms().unwrap().node_uuid().to_owned();
    let again = host(data.path()).sms().unwrap().node_uuid().to_owned();
    assert_eq!(first, again);
    let other = tempfile::tempdir().unwrap();
    assert_ne!(host(other.path()).sms().unwrap().node_uuid(), first);
    sms.stop().await;
}

#[tokio::test]
async fn an_unreachable_sms_does_not_stop_the_host_and_is_joined_when_back() {
    let sms = FakeSms::start().await;
    sms.set_down(true);
    let server = TestServer::start_with(|c| sms.join(c)).await;
    // Serving: a local call that needs no SMS works.
    let info = loop {
        let info = server.health_info().await;
        if info["sms"] == "unreachable" {
            break info;
        }
        tokio::task::yield_now().await;
    };
    assert!(info["sms_error"].contains("unreachable"), "{info:?}");
    sms.set_down(false);
    sms.until("the node registered", |s| s.node_registrations >= 1)
        .await;
    sms.until("a heartbeat", |s| !s.heartbeats.is_empty()).await;
    assert_eq!(server.health_info().await["sms"], "registered");
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn a_forgotten_node_registers_again() {
    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    sms.until("a heartbeat", |s| !s.heartbeats.is_empty()).await;
    // The SMS restarts and forgets its nodes: heartbeats get NOT_FOUND.
    sms.seen().nodes.clear();
    sms.until("a second registration", |s| s.node_registrations >= 2)
        .await;
    server.stop().await;
    sms.stop().await;
}

#[tokio::test]
async fn reports_reach_the_sms_in_order_and_an_idle_instance_is_cleared() {
    use spearlet::sms::{ExecutionReport, InstanceReport, ReportedInstanceStatus, ReportedStatus};
    use spearlet_proto::sms::{ExecutionStatus, InstanceStatus};
    use std::time::SystemTime;

    let sms = FakeSms::start().await;
    let server = TestServer::start_with(|c| sms.join(c)).await;
    let client = server.host.sms().unwrap();
    let uuid = client.node_uuid().to_owned();
    let reports = client.reports();
    let execution = |status| ExecutionReport {
        execution_id: "exec-1".into(),
        invocation_id: "inv-1".into(),
        task_id: "task-1".into(),
        function_name: "add".into(),
        instance_id: "instance-1".into(),
        status,
        started_at: SystemTime::now(),
        completed_at: None,
        metadata: Default::default(),
    };
    let instance = |serving: &str| InstanceReport {
        instance_id: "instance-1".into(),
        task_id: "task-1".into(),
        status: ReportedInstanceStatus::Running,
        created_at: SystemTime::now(),
        current_execution_id: serving.into(),
    };
    let before = sms.report_count();
    reports.instance(instance("exec-1"));
    sms.next_report(before).await;
    assert!(sms
        .instances()
        .iter()
        .any(|i| i.instance_id == "instance-1" && i.current_execution_id == "exec-1"));
    reports.execution(execution(ReportedStatus::Running));
    sms.until_execution("exec-1", |_| true).await;
    reports.execution(execution(ReportedStatus::Completed));
    reports.instance(instance(""));
    sms.until_execution("exec-1", |e| e.status == ExecutionStatus::Completed as i32)
        .await;
    sms.until("the instance cleared", |s| {
        s.stored_instances
            .get("instance-1")
            .is_some_and(|i| i.current_execution_id.is_empty())
    })
    .await;
    let stored = sms.execution("exec-1").unwrap();
    assert_eq!(stored.node_uuid, uuid);
    assert!(stored.completed_at_ms > 0);
    let instances = sms.instances();
    assert!(instances.iter().all(|i| i.node_uuid == uuid));
    assert_eq!(
        sms.instance("instance-1").unwrap().status,
        InstanceStatus::Running as i32
    );
    let times: Vec<i64> = sms
        .executions()
        .iter()
        .filter(|e| e.execution_id == "exec-1")
        .map(|e| e.updated_at_ms)
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    let stats = reports.stats();
    assert_eq!((stats.failed, stats.dropped), (0, 0), "{stats:?}");
    let calls = server.host.sms_status().unwrap().calls;
    assert!(calls
        .iter()
        .any(|(call, made, _)| call.name() == "ReportExecution" && *made >= 1));
    server.stop().await;
    sms.stop().await;
}
