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
            ("127.0.0.1", i32::from(server.addr.port()), "active")
        );
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
