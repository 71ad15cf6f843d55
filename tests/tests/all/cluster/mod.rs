//! Joining a SPEAR cluster (docs/cluster.md), against the fake SMS: the
//! node's own life (`node`), tasks registered on creation and what the
//! cluster then resolves their ids to (`tasks`), and ids looked up from
//! another node (`lookup`).

mod lookup;
mod node;
mod tasks;

use spearlet_proto::spearlet as pb;

use crate::fake_sms::FakeSms;
use crate::grpc_util::{any_i64, with_params, TestServer};

pub(super) fn add(req: pb::InvokeFunctionRequest, a: i64, b: i64) -> pb::InvokeFunctionRequest {
    with_params(req, &[("a", any_i64(a)), ("b", any_i64(b))])
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A server that joined `sms`, with no artifact roots: it can run only
/// what the cluster gives it.
pub(super) async fn bare_node(sms: &FakeSms) -> TestServer {
    TestServer::start_with(|c| {
        sms.join(c);
        c.artifacts.roots.clear();
    })
    .await
}
