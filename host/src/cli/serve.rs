//! `spearlet serve`: the gRPC server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use spearlet::api::Tokens;
use spearlet::{Config, Host};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [config: server.listen; default 127.0.0.1:50052].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// State directory, e.g. for the artifact cache [config: data_dir].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// A directory local artifacts may come from; repeat for several
    /// [config: artifacts.roots, which this adds to].
    #[arg(long = "artifact-root", value_name = "DIR")]
    artifact_roots: Vec<PathBuf>,

    /// Join a SPEAR cluster: the SMS's gRPC address, `http://HOST:PORT`
    /// [config: sms.grpc].
    #[arg(long, value_name = "URL")]
    sms_grpc: Option<url::Url>,

    /// The SMS's HTTP address, for its file API [config: sms.http].
    #[arg(long, value_name = "URL")]
    sms_http: Option<url::Url>,

    /// How often the node's heartbeat goes to the SMS, e.g. `10s`
    /// [config: sms.heartbeat_interval].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    sms_heartbeat: Option<std::time::Duration>,

    /// `HOST:PORT` other nodes and clients reach this spearlet at
    /// [config: sms.advertise; default: the listen address].
    #[arg(long, value_name = "ADDR")]
    advertise: Option<String>,

    /// The node's HTTP port: the stream plane SPEAR's gateway connects to
    /// (`ws://ADDR/api/v1/executions/ID/streams/ws`), `/health` and
    /// `/metrics` [config: server.http_listen; default: none, or the listen
    /// IP on a free port when joining an SMS].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,

    /// Serve Prometheus metrics at `http://ADDR/metrics` [config: metrics.listen].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Where the plugin code of tasks whose creation does not say
    /// (`spearlet.isolation`) runs: `in-process`, or `process` (worker
    /// processes: a crash costs a worker, not the server)
    /// [config: tiers.isolation; default in-process].
    #[arg(long, value_name = "TIER", value_parser = super::isolation_parser())]
    isolation: Option<spearlet::isolate::Isolation>,

    /// A TOML configuration file. Every key is optional; environment
    /// variables `SPEARLET_<SECTION>__<KEY>` (e.g. `SPEARLET_POOL__MAX_INSTANCES=4`)
    /// override it, and these flags override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print the effective configuration (file, environment and flags
    /// combined) as TOML and exit, without serving.
    #[arg(long)]
    check_config: bool,
}

/// Top-level configuration keys; other `SPEARLET_*` variables (such as the
/// client's `SPEARLET_ENDPOINT`) are not configuration.
const SECTIONS: [&str; 13] = [
    "data_dir",
    "server",
    "artifacts",
    "pool",
    "executions",
    "tiers",
    "exec",
    "limits",
    "auth",
    "tls",
    "sms",
    "tasks",
    "metrics",
];

/// A configuration file read with its sections' earlier names taken as
/// today's: `[exec]` is `[tiers]`. (The defaults the file is merged over
/// already name `tiers`, so serde's alias alone would see both.)
struct OldNames<P>(P);

impl<P: figment::Provider> figment::Provider for OldNames<P> {
    fn metadata(&self) -> figment::Metadata {
        self.0.metadata()
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let mut data = self.0.data()?;
        for dict in data.values_mut() {
            if let Some(old) = dict.remove("exec") {
                if dict.contains_key("tiers") {
                    return Err("[exec] is the earlier name of [tiers]: set one of them".into());
                }
                dict.insert("tiers".to_owned(), old);
            }
        }
        Ok(data)
    }
}

pub fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = &args.config {
        anyhow::ensure!(
            file.exists(),
            "config file {} does not exist",
            file.display()
        );
        figment = figment.merge(OldNames(Toml::file(file)));
    }
    figment = figment.merge(
        Env::prefixed("SPEARLET_")
            .split("__")
            .filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                SECTIONS.iter().any(|s| key.starts_with(s))
            })
            .map(|key| match key.as_str().split_once('.') {
                Some((section, rest)) if section.eq_ignore_ascii_case("exec") => {
                    format!("tiers.{rest}").into()
                }
                _ => key.as_str().to_owned().into(),
            }),
    );
    let mut config: Config = figment.extract().context("invalid configuration")?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config
        .artifacts
        .roots
        .extend(args.artifact_roots.iter().cloned());
    if let Some(url) = &args.sms_grpc {
        config.sms.grpc = Some(url.clone());
    }
    if let Some(url) = &args.sms_http {
        config.sms.http = Some(url.clone());
    }
    if let Some(interval) = args.sms_heartbeat {
        config.sms.heartbeat_interval = interval;
    }
    if let Some(addr) = args.http_listen {
        config.server.http_listen = Some(addr);
    }
    if let Some(addr) = args.metrics_listen {
        config.metrics.listen = Some(addr);
    }
    if let Some(addr) = &args.advertise {
        config.sms.advertise = Some(addr.clone());
    }
    if let Some(tier) = args.isolation {
        config.tiers.isolation = tier;
    }
    config.normalized().map_err(anyhow::Error::msg)
}

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    if args.check_config {
        print!(
            "{}",
            toml::to_string_pretty(&config).context("cannot show the configuration")?
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(serve(config));
    // Plugins that ignored their cancellation may still hold blocking
    // threads: they are abandoned, not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    eprintln!("stopped");
    Ok(())
}

/// Starts the host and serves until a stop signal, then stops what it
/// started beside the server (metrics, SIGHUP handling).
async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let roots = config.artifacts.roots.clone();
    let data_dir = config.data_dir.clone();
    let host = Host::new(config)?;
    let tokens = match &host.config().auth.tokens_file {
        Some(file) => Some(Tokens::from_file(file)?),
        None => None,
    };
    // Installed before the server says it listens, so a SIGHUP sent as
    // soon as it does never meets the default action (exit).
    let hangups = match &tokens {
        Some(tokens) => Some(reload_on_hangup(tokens.clone())?),
        None => None,
    };
    // Ready before the first task needs one: the first load of every
    // plugin runs in a worker, and process-tier tasks run in them.
    host.artifacts().workers().prestart();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let banner = Banner {
        addr: listener.local_addr()?,
        data_dir: &data_dir,
        roots: &roots,
    };
    banner.print(&host, tokens.as_ref());
    let metrics = serve_metrics(&host).await?;
    let http = bind_http_port(&host, &listener).await?;
    spearlet::api::serve_node(host, listener, http, tokens, drain_on_stop()).await?;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(hangups) = hangups {
        hangups.abort();
    }
    Ok(())
}

/// What the server says about itself once it listens.
struct Banner<'a> {
    addr: SocketAddr,
    data_dir: &'a Path,
    roots: &'a [PathBuf],
}

impl Banner<'_> {
    fn print(&self, host: &Host, tokens: Option<&Tokens>) {
        eprintln!(
            "spearlet {} listening on {}",
            env!("CARGO_PKG_VERSION"),
            self.addr
        );
        eprintln!("  data dir:       {}", self.data_dir.display());
        if self.roots.is_empty() {
            eprintln!("  artifact roots: none (local artifacts refused; pass --artifact-root)");
        }
        for root in self.roots {
            eprintln!("  artifact root:  {}", root.display());
        }
        if host.config().tiers.isolation != spearlet::isolate::Isolation::InProcess {
            eprintln!(
                "  isolation:      {} (tasks whose creation does not say)",
                host.config().tiers.isolation
            );
        }
        if let (Some(tokens), Some(file)) = (tokens, &host.config().auth.tokens_file) {
            eprintln!(
                "  auth tokens:    {} from {} (SIGHUP reads it again)",
                tokens.count(),
                file.display()
            );
        }
        if let Some(sms) = host.sms() {
            eprintln!(
                "  SMS:            {} (node {})",
                sms.endpoint(),
                sms.node_uuid()
            );
        }
    }
}

/// Serves metrics on `metrics.listen`, if set, until aborted; warns when
/// they are exposed beyond loopback without a token.
async fn serve_metrics(
    host: &Host,
) -> anyhow::Result<Option<tokio::task::JoinHandle<spearlet::Result<()>>>> {
    let Some(at) = host.config().metrics.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot serve metrics on {at}"))?;
    let at = listener.local_addr()?;
    eprintln!("  metrics:        http://{at}/metrics");
    let token = host.config().metrics.token.as_deref();
    if let Some(warning) = spearlet::metrics::exposure_warning(at, token) {
        eprintln!("  WARNING:        {warning}");
    }
    Ok(Some(tokio::spawn(spearlet::metrics::serve(
        host.clone(),
        listener,
        std::future::pending(),
    ))))
}

/// Binds the node's HTTP port (stream plane, `/health`, `/metrics`) where
/// the configuration puts it, if anywhere.
async fn bind_http_port(
    host: &Host,
    grpc: &tokio::net::TcpListener,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(at) = spearlet::api::http_address(host.config(), grpc)? else {
        return Ok(None);
    };
    let http = tokio::net::TcpListener::bind(at)
        .await
        .with_context(|| format!("cannot serve the node's HTTP port on {at}"))?;
    let at = http.local_addr()?;
    eprintln!(
        "  HTTP port:      http://{at} (stream plane ws://{at}/api/v1/executions/ID/streams/ws, /health, /metrics)"
    );
    Ok(Some(http))
}

/// Resolves on the first stop signal, so that calls in flight finish; a
/// second signal exits at once.
async fn drain_on_stop() {
    stop_signal().await;
    eprintln!("stopping: calls in flight finish (a second signal stops at once)");
    tokio::spawn(async {
        stop_signal().await;
        eprintln!("stopped at once");
        std::process::exit(130);
    });
}

/// Reads the tokens file again on every SIGHUP ([`spearlet::api::Tokens::reload`],
/// which logs the outcome): a file that cannot be read, or holds no token,
/// leaves the tokens in force. Connections stay open throughout.
fn reload_on_hangup(tokens: Tokens) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloading = tokens.clone();
            // The outcome is logged by `reload`; a failure keeps the old tokens.
            let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
        }
    }))
}

/// SIGTERM or SIGINT, whichever comes first.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
