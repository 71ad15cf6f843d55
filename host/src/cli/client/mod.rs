//! The client commands: `invoke`, `tasks`, `task`, `executions`, `status`,
//! `cancel`, `health`.

mod declared;
mod health;
mod invoke;
mod manage;
mod present;
mod reply;
mod table;
mod task;
mod value;
mod view;

use anyhow::Context as _;
use clap::Args;
use spearlet_proto::spearlet::function_service_client::FunctionServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use super::Format;

pub use health::{health, HealthArgs};
pub use invoke::{invoke, InvokeArgs};
pub use manage::{
    cancel, executions, status, tasks, CancelArgs, ExecutionsArgs, StatusArgs, TasksArgs,
};
pub use task::{task, TaskCommand};

/// The options every client command takes: where the server is, and how
/// to print its answers. Flattened into each client command (not global),
/// so `serve` and the `plugin` commands neither show nor accept them.
#[derive(Debug, Args)]
pub struct ClientOptions {
    #[command(flatten)]
    endpoint: Endpoint,

    /// How to print: `text` for people, or `json` for scripts (one object
    /// per result and per line: a list or a stream is JSON Lines; bytes
    /// are base64).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

impl ClientOptions {
    fn json(&self) -> bool {
        self.format == Format::Json
    }
}

/// Where the server is.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The spearlet server.
    #[arg(
        long,
        env = "SPEARLET_ENDPOINT",
        default_value = "http://127.0.0.1:50052"
    )]
    endpoint: String,

    /// A bearer token, for a server that requires one (auth.tokens_file).
    #[arg(long, env = "SPEARLET_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// The CA certificate (PEM) that signed an `https://` endpoint's certificate.
    #[arg(long, env = "SPEARLET_CA", value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
}

/// Sends `authorization: Bearer TOKEN` with every call, when there is a token.
#[derive(Debug, Clone)]
pub(super) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The client the commands use.
pub(super) type Client = FunctionServiceClient<InterceptedService<Channel, Bearer>>;

/// The admin client (`spearlet.admin.v1.AdminService`).
pub(super) type AdminClient =
    spearlet_proto::spearlet::admin::v1::admin_service_client::AdminServiceClient<
        InterceptedService<Channel, Bearer>,
    >;

pub(super) async fn connect(endpoint: &Endpoint) -> anyhow::Result<Client> {
    let (channel, bearer) = channel(endpoint).await?;
    Ok(FunctionServiceClient::with_interceptor(channel, bearer))
}

pub(super) async fn connect_admin(endpoint: &Endpoint) -> anyhow::Result<AdminClient> {
    let (channel, bearer) = channel(endpoint).await?;
    Ok(
        spearlet_proto::spearlet::admin::v1::admin_service_client::AdminServiceClient::with_interceptor(
            channel, bearer,
        ),
    )
}

async fn channel(endpoint: &Endpoint) -> anyhow::Result<(Channel, Bearer)> {
    let bearer = match &endpoint.token {
        Some(token) => Some(
            format!("Bearer {}", token.trim())
                .parse()
                .context("the token must be printable ASCII")?,
        ),
        None => None,
    };
    let mut channel = Channel::from_shared(endpoint.endpoint.clone())
        .with_context(|| format!("`{}` is not an endpoint URL", endpoint.endpoint))?;
    if endpoint.endpoint.starts_with("https://") {
        let ca = endpoint
            .ca
            .as_ref()
            .context("an https:// endpoint needs --ca FILE (the CA that signed its certificate)")?;
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        channel = channel
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
            .context("TLS configuration")?;
    }
    let channel = channel
        .connect()
        .await
        .with_context(|| format!("cannot connect to spearlet at {}", endpoint.endpoint))?;
    Ok((channel, Bearer(bearer)))
}

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A gRPC error, readably: `NOT_FOUND: task `x` not found`.
pub(super) fn status_error(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let kind = status
        .metadata()
        .get(spearlet::api::ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|k| format!(" [{k}]"))
        .unwrap_or_default();
    let retry = status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .map(|d| format!(" (retry after {} ms)", d.as_millis()))
        .unwrap_or_default();
    if kind.is_empty() && connection_lost(&status) {
        return anyhow::anyhow!(
            "the server closed the connection during the call ({}): it may have crashed — a \
             plugin that crashes in process takes the server down with it; run plugins you \
             do not trust with `--isolation process`, where a crash costs one worker",
            status.message()
        );
    }
    anyhow::anyhow!("{:?}{kind}: {}{retry}", status.code(), status.message())
}

/// Whether `status` is the transport's, for a connection that went away
/// mid-call (rather than one that could not be made, or an answer of the
/// server's: those carry an error kind).
fn connection_lost(status: &tonic::Status) -> bool {
    use tonic::Code;
    if !matches!(
        status.code(),
        Code::Unknown | Code::Internal | Code::Unavailable
    ) {
        return false;
    }
    let mut said = status.message().to_ascii_lowercase();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        said.push(' ');
        said.push_str(&e.to_string().to_ascii_lowercase());
        source = e.source();
    }
    !said.contains("connect error")
        && [
            "transport error",
            "connection closed",
            "connection reset",
            "broken pipe",
            "stream closed",
            "protocol error",
        ]
        .iter()
        .any(|m| said.contains(m))
}
