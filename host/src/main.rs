//! The `spearlet` command line. `anyhow` is the binary's edge: it lives
//! here and in `cli`, and nowhere in the library, whose functions return
//! its own typed `spearlet::Error`.

mod cli;

/// The server's allocator. glibc's malloc (its consolidation of freed
/// chunks, its locks) was a tenth of the serving process's CPU under load
/// in P1's profile; mimalloc's thread-local free lists cost a fraction.
/// Plugins keep their own allocators: whatever crosses the ABI is freed by
/// the side that allocated it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::Layer as _;

/// Span export over OTLP (feature `otel`).
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;

    /// What keeps the export going; dropped at the end of `main`, it
    /// flushes the spans left, then stops the exporter's runtime.
    pub struct Spans {
        provider: opentelemetry_sdk::trace::SdkTracerProvider,
        _runtime: tokio::runtime::Runtime,
    }

    impl Drop for Spans {
        fn drop(&mut self) {
            let _ = self.provider.shutdown();
        }
    }

    /// A tracing layer exporting spans to the collector the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` names (default
    /// `http://localhost:4317`). The gRPC exporter runs on a one-thread
    /// runtime of its own, apart from the one that serves.
    pub fn layer<S>() -> anyhow::Result<(
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
        Spans,
    )>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let exporter = {
            let _inside = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build();
        let tracer = provider.tracer("spearlet");
        Ok((
            tracing_opentelemetry::layer().with_tracer(tracer),
            Spans {
                provider,
                _runtime: runtime,
            },
        ))
    }
}

fn main() -> ExitCode {
    // A worker process of the process tier (started by a host, never by
    // hand): its channel is its standard input, and it logs nothing of its
    // own; what a plugin prints on stderr reaches the host's log.
    if std::env::args_os().nth(1).is_some_and(|a| a == "worker") && std::env::args_os().len() == 2 {
        return match spearlet::isolate::worker::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spearlet worker: {e}");
                ExitCode::from(70)
            }
        };
    }
    let args = cli::Cli::parse();
    // RUST_LOG wins; else --log-level; else warnings, and spearlet's info.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match args.log_level() {
            Some(level) => format!("warn,spearlet={level},plugin={level}"),
            None => "warn,spearlet=info,plugin=info".to_owned(),
        })
    });
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let lines = match args.log_format() {
        cli::LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        cli::LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(lines);
    // Kept to the end of `main`: dropping it flushes the spans left.
    #[cfg(feature = "otel")]
    let _spans = match otel::layer() {
        Ok((layer, provider)) => {
            registry.with(layer).init();
            provider
        }
        Err(e) => {
            eprintln!("error: OTLP span export: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    #[cfg(not(feature = "otel"))]
    registry.init();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
