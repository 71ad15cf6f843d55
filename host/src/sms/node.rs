//! This process as a node of the cluster: registered when it starts (and
//! again whenever the SMS has forgotten it), a heartbeat every interval
//! carrying its health, deleted when it stops gracefully.
//!
//! An SMS that cannot be reached never stops the host from serving: the
//! node keeps trying, with backoff, and the link's state says how it
//! stands (see [`super::LinkState`]).

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use spearlet_proto::sms::node_service_client::NodeServiceClient;
use spearlet_proto::sms::{DeleteNodeRequest, HeartbeatRequest, Node, RegisterNodeRequest};
use tokio::sync::watch;

use super::{unix_seconds, LinkState, Sms, SmsCall};
use crate::error::{Error, Result};

/// The file in the data directory that keeps the node's uuid.
const IDENTITY_FILE: &str = "node-id";

/// The status the node registers with: SPEAR's placement takes only
/// "online" nodes (any case).
pub(super) const NODE_STATUS: &str = "online";

/// Where other nodes and clients reach this spearlet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// Host name or IP address.
    pub host: String,
    /// gRPC port.
    pub port: u16,
    /// The HTTP port of the stream plane (WebSocket); 0: none.
    pub http_port: u16,
}

/// Reads `HOST:PORT` (an IPv6 host in brackets).
pub(super) fn parse_advertised(text: &str) -> Result<Advertised> {
    let invalid = |reason: &str| Error::InvalidRequest {
        field: "sms.advertise",
        reason: format!("`{text}` {reason}; expected HOST:PORT"),
    };
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| invalid("has no port"))?;
    let port: u16 = port.parse().map_err(|_| invalid("has no valid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(invalid("names no host or port 0"));
    }
    Ok(Advertised {
        host: host.to_owned(),
        port,
        http_port: 0,
    })
}

/// The IP address registered for `host` (from `sms.advertise` or the
/// listen address): SPEAR needs a literal IP, never a host name nor
/// `0.0.0.0` / `::`. A host name is resolved once; an unspecified address
/// (or a name that does not resolve) becomes the local address that routes
/// to the SMS at `sms`: a UDP socket connected to it (no packet is sent)
/// says which. Says how it was chosen.
pub(super) async fn registered_ip(host: &str, sms: &url::Url) -> (IpAddr, &'static str) {
    match host.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => return (ip, "as given"),
        Ok(_) => {}
        Err(_) => match tokio::net::lookup_host((host, 0)).await {
            Ok(addrs) => {
                let addrs: Vec<IpAddr> = addrs
                    .map(|a| a.ip())
                    .filter(|ip| !ip.is_unspecified())
                    .collect();
                // IPv4 first: what SPEAR's other nodes most likely reach.
                if let Some(ip) = addrs.iter().find(|ip| ip.is_ipv4()).or(addrs.first()) {
                    return (*ip, "host name resolved");
                }
                tracing::warn!(
                    host,
                    "the advertised host name resolves to no usable address"
                );
            }
            Err(error) => {
                tracing::warn!(host, %error, "the advertised host name does not resolve");
            }
        },
    }
    match route_to(sms).await {
        Some(ip) => (ip, "the local address routing to the SMS"),
        None => {
            tracing::warn!(
                sms = %sms,
                "no local address routes to the SMS; registering 127.0.0.1: set sms.advertise \
                 (or --advertise HOST:PORT)"
            );
            (
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                "loopback, nothing else found",
            )
        }
    }
}

/// The local IP that routes to the SMS at `sms`.
async fn route_to(sms: &url::Url) -> Option<IpAddr> {
    let port = sms.port_or_known_default().unwrap_or(80);
    let targets: Vec<SocketAddr> = match sms.host()? {
        url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        url::Host::Domain(name) => tokio::net::lookup_host((name, port)).await.ok()?.collect(),
    };
    targets.into_iter().find_map(|target| {
        let any: SocketAddr = if target.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(any).ok()?;
        socket.connect(target).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_unspecified()).then_some(ip)
    })
}

/// The node's uuid, made once and kept in `data_dir` so that a restart is
/// the same node. Written under a temporary name and linked into place, so
/// a crash never leaves a half-written identity and two processes starting
/// together agree on one.
pub(super) fn identity(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(IDENTITY_FILE);
    let read = |path: &Path| -> Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let id = text.trim();
                uuid::Uuid::parse_str(id).map_err(|_| Error::InvalidRequest {
                    field: "data_dir",
                    reason: format!(
                        "{} does not hold a node uuid (`{id}`); remove it to make a new identity",
                        path.display()
                    ),
                })?;
                Ok(Some(id.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    };
    if let Some(id) = read(&path)? {
        return Ok(id);
    }
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let id = uuid::Uuid::new_v4().to_string();
    let mut temp = tempfile::NamedTempFile::new_in(data_dir).map_err(|e| Error::io(data_dir, e))?;
    temp.write_all(id.as_bytes())
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| Error::io(temp.path(), e))?;
    match std::fs::hard_link(temp.path(), &path) {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.ok_or_else(|| Error::io(&path, std::io::ErrorKind::NotFound.into()))
        }
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// The node's life in the cluster, run in the background until
/// [`NodeAgent::leave`].
#[derive(Debug)]
pub struct NodeAgent {
    sms: Arc<Sms>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The health a heartbeat carries.
pub type HealthInfo = Box<dyn Fn() -> HashMap<String, String> + Send + Sync>;

impl Sms {
    /// Starts this node's registration and heartbeats, advertising
    /// `sms.advertise` or else `listening`; `health` is asked for the
    /// heartbeat's health info each time.
    pub fn join(
        self: &Arc<Self>,
        listening: SocketAddr,
        http: Option<SocketAddr>,
        health: HealthInfo,
    ) -> NodeAgent {
        // The host is made a literal IP when the agent starts (see
        // `registered_ip`).
        let mut advertised = match &self.advertise {
            Some(text) => parse_advertised(text).expect("checked when the client was made"),
            None => Advertised {
                host: listening.ip().to_string(),
                port: listening.port(),
                http_port: 0,
            },
        };
        advertised.http_port = http.map_or(0, |http| http.port());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(Arc::clone(self).live(advertised, health, stopped));
        NodeAgent {
            sms: Arc::clone(self),
            stop,
            task,
        }
    }

    async fn live(
        self: Arc<Self>,
        mut advertised: Advertised,
        health: HealthInfo,
        mut stopped: watch::Receiver<bool>,
    ) {
        let (ip, how) = tokio::select! {
            chosen = registered_ip(&advertised.host, &self.grpc) => chosen,
            _ = stopped.changed() => return,
        };
        if advertised.host != ip.to_string() {
            tracing::info!(
                advertised = %advertised.host,
                %ip,
                how,
                "registering this node at the SMS with a literal IP"
            );
        }
        advertised.host = ip.to_string();
        let mut registered = false;
        let mut failures = 0u32;
        loop {
            let pause = if registered {
                match self.heartbeat(&health()).await {
                    Ok(()) => {
                        failures = 0;
                        self.heartbeat
                    }
                    // The SMS answered but does not know this node (it
                    // restarted, or expired it): register again at once.
                    Err(Error::SmsRefused { message, .. }) => {
                        tracing::info!(%message, "the SMS refused a heartbeat; registering again");
                        registered = false;
                        Duration::ZERO
                    }
                    Err(e) => {
                        failures += 1;
                        self.unreachable(&e, failures);
                        self.heartbeat
                    }
                }
            } else {
                match self.register_node(&advertised).await {
                    Ok(()) => {
                        registered = true;
                        failures = 0;
                        tracing::info!(
                            sms = %self.grpc,
                            node = %self.node_uuid,
                            advertised = %format!("{}:{}", advertised.host, advertised.port),
                            "registered with the SMS"
                        );
                        self.heartbeat
                    }
                    Err(e) => {
                        failures += 1;
                        self.unreachable(&e, failures);
                        crate::backoff::full_jitter(
                            Duration::from_millis(200),
                            self.heartbeat.max(Duration::from_millis(200)),
                            failures,
                        )
                    }
                }
            };
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn unreachable(&self, error: &Error, failures: u32) {
        // The first failure and then every tenth: an SMS down for an hour
        // must not fill the log.
        if failures == 1 || failures.is_multiple_of(10) {
            tracing::warn!(%error, failures, "the SMS cannot be reached; the host serves on and retries");
        }
        self.set_state(LinkState::Unreachable {
            error: error.to_string(),
        });
    }

    async fn register_node(&self, advertised: &Advertised) -> Result<()> {
        let now = unix_seconds(SystemTime::now());
        let node = Node {
            uuid: self.node_uuid.clone(),
            ip_address: advertised.host.clone(),
            port: i32::from(advertised.port),
            // SPEAR places invocations only on "online" nodes.
            status: NODE_STATUS.to_owned(),
            last_heartbeat: now,
            registered_at: now,
            metadata: [
                ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
                (
                    "plugin_abi".to_owned(),
                    spear_plugin_sdk::ffi::ABI_VERSION.to_owned(),
                ),
                ("kind".to_owned(), "native-plugins".to_owned()),
            ]
            .into_iter()
            .chain(
                // SPEAR falls back to it when `http_port` is 0.
                (advertised.http_port != 0)
                    .then(|| ("http_port".to_owned(), advertised.http_port.to_string())),
            )
            .collect(),
            http_port: i32::from(advertised.http_port),
        };
        let call = SmsCall::RegisterNode;
        let reply = self.outcome(
            call,
            NodeServiceClient::new(self.channel())
                .register_node(RegisterNodeRequest { node: Some(node) })
                .await,
        )?;
        let reply = reply.into_inner();
        if !reply.success {
            return Err(self.refused(call, reply.message));
        }
        if !reply.node_uuid.is_empty() && reply.node_uuid != self.node_uuid {
            tracing::warn!(
                ours = %self.node_uuid,
                theirs = %reply.node_uuid,
                "the SMS registered this node under another uuid; tasks name ours"
            );
        }
        self.answered();
        Ok(())
    }

    async fn heartbeat(&self, health: &HashMap<String, String>) -> Result<()> {
        let call = SmsCall::Heartbeat;
        let reply = self.outcome(
            call,
            NodeServiceClient::new(self.channel())
                .heartbeat(HeartbeatRequest {
                    uuid: self.node_uuid.clone(),
                    timestamp: unix_seconds(SystemTime::now()),
                    health_info: health.clone(),
                })
                .await,
        )?;
        let reply = reply.into_inner();
        if !reply.success {
            return Err(self.refused(call, reply.message));
        }
        self.answered();
        Ok(())
    }

    /// The SMS accepted a registration or a heartbeat just now.
    fn answered(&self) {
        self.link().last_heartbeat = Some(SystemTime::now());
        self.set_state(LinkState::Registered);
    }
}

impl NodeAgent {
    /// Stops the heartbeats and deletes the node from the SMS, so that no
    /// one routes to a host that is going away.
    ///
    /// # Errors
    ///
    /// [`Error::SmsUnavailable`] or [`Error::SmsRefused`] when the SMS could
    /// not be told (the node then expires there by its missing heartbeats).
    pub async fn leave(self) -> Result<()> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let sms = &self.sms;
        if sms.link().last_heartbeat.is_none() {
            // Never registered: there is nothing to delete.
            sms.set_state(LinkState::Left);
            return Ok(());
        }
        let call = SmsCall::DeleteNode;
        let reply = sms.outcome(
            call,
            NodeServiceClient::new(sms.channel())
                .delete_node(DeleteNodeRequest {
                    uuid: sms.node_uuid.clone(),
                })
                .await,
        )?;
        let reply = reply.into_inner();
        if !reply.success {
            return Err(sms.refused(call, reply.message));
        }
        sms.set_state(LinkState::Left);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = identity(dir.path()).unwrap();
        assert!(uuid::Uuid::parse_str(&first).is_ok());
        assert_eq!(identity(dir.path()).unwrap(), first);
        std::fs::write(dir.path().join(IDENTITY_FILE), "not a uuid").unwrap();
        let err = identity(dir.path()).unwrap_err().to_string();
        assert!(err.contains("remove it"), "{err}");
    }

    #[tokio::test]
    async fn the_registered_ip_is_a_literal_and_never_unspecified() {
        let sms: url::Url = "http://127.0.0.1:9".parse().unwrap();
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        // A literal is kept.
        assert_eq!(
            registered_ip("10.1.2.3", &sms).await,
            ("10.1.2.3".parse().unwrap(), "as given")
        );
        assert_eq!(
            registered_ip("::1", &sms).await.0,
            "::1".parse::<IpAddr>().unwrap()
        );
        // Unspecified: the address that routes to the SMS.
        for unspecified in ["0.0.0.0", "::"] {
            let (ip, how) = registered_ip(unspecified, &sms).await;
            assert_eq!(ip, loopback, "{unspecified}");
            assert!(how.contains("routing"), "{how}");
        }
        // A host name is resolved.
        let (ip, how) = registered_ip("localhost", &sms).await;
        assert!(ip.is_loopback(), "{ip}");
        assert_eq!(how, "host name resolved");
        // The SMS named by a host name.
        let named: url::Url = "http://localhost:9".parse().unwrap();
        assert!(registered_ip("0.0.0.0", &named).await.0.is_loopback());
    }

    #[test]
    fn advertised_addresses_are_host_and_port() {
        assert_eq!(
            parse_advertised("node-a.internal:50052").unwrap(),
            Advertised {
                host: "node-a.internal".into(),
                port: 50052,
                http_port: 0,
            }
        );
        assert_eq!(parse_advertised("[::1]:7").unwrap().host, "::1");
        for bad in ["node-a", "node-a:http", ":50052", "h:0"] {
            let err = parse_advertised(bad).unwrap_err().to_string();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
