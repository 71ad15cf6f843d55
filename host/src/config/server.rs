//! The gRPC endpoint's sections, `[server]`, `[tls]` and `[auth]`: where it
//! listens, how it is encrypted and whom it lets in are read together when
//! the server starts, so they sit together, apart from what the server runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The gRPC server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default: `127.0.0.1:50052`.
    pub listen: SocketAddr,
    /// The node's HTTP port: the stream plane SPEAR's gateway connects to
    /// (`/api/v1/executions/{id}/streams/ws`), `/metrics` and `/health`
    /// (`docs/cluster.md`). Default: none, except when joining an SMS
    /// (`sms.grpc`): then the listen address's IP, on a port the system
    /// chooses, which the node registers at the SMS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<SocketAddr>,
    /// On SIGTERM or SIGINT, how long calls in flight may take to finish
    /// before ASYNC executions still running are cancelled and the server
    /// stops. Default: 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            http_listen: None,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// TLS for the gRPC server (rustls). Without `cert` and `key`, plain
/// HTTP/2.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its private key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// A CA (PEM) whose certificates clients must present: mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// Who may call. Without a tokens file, anyone who can reach the address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A file of bearer tokens, one per line (blank lines and `#` comments
    /// ignored). When set, every RPC but `grpc.health.v1` needs
    /// `authorization: Bearer TOKEN` with one of them. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_file: Option<PathBuf>,
}
