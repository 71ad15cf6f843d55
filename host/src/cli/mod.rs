//! Command-line interface: argument definitions and dispatch.

mod check;
mod child;
mod client;
#[cfg(test)]
mod help_tests;
mod inspect;
mod new;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// spearlet — a function host whose functions are native plugins.
///
/// Plugins are shared libraries built with `spear-plugin-sdk`. spearlet
/// verifies each one's sha256 on the bytes it loads and checks its ABI
/// before calling anything in it. `serve` runs the gRPC server; the other
/// commands are its client (or work on plugin files directly).
#[derive(Debug, Parser)]
#[command(name = "spearlet", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log lines as `text`, or `json`: one object per line, with the
    /// fields of the event and its span (trace_id, task, execution…).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Log level of spearlet and its plugins (error, warn, info, debug,
    /// trace); RUST_LOG, when set, says more precisely.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<tracing::Level>,
}

/// How a command prints its results (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people: aligned lines, values with their types.
    #[default]
    Text,
    /// For scripts: one JSON object per result and per line (JSON Lines).
    Json,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Cli {
    /// The log format asked for.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// The log level asked for, if any.
    pub fn log_level(&self) -> Option<tracing::Level> {
        self.log_level
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server (spearlet.FunctionService, grpc.health.v1, reflection).
    Serve(serve::ServeArgs),
    /// Invoke a function: on a new task from an artifact, or an existing task.
    Invoke(client::InvokeArgs),
    /// List tasks.
    Tasks(client::TasksArgs),
    /// Show, delete, upgrade or roll back a task.
    #[command(subcommand)]
    Task(client::TaskCommand),
    /// List executions. A SYNC call that completed and named no execution id
    /// is not kept (its caller has the result) unless the server sets
    /// `[executions] keep_completed_sync`; failures always are.
    Executions(client::ExecutionsArgs),
    /// Show an execution's status, result and (with --logs) log lines.
    Status(client::StatusArgs),
    /// Cancel an execution.
    Cancel(client::CancelArgs),
    /// Show the server's health, counters and SMS link.
    Health(client::HealthArgs),
    /// Work with plugin files.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load plugin files (or URLs) through the full integrity and ABI checks
    /// and describe them: sha256, name and version, SDK and ABI version,
    /// function table.
    ///
    /// A refused file gets one line naming the error kind; the exit status
    /// is then 2. Each source is inspected in a child process, so a library
    /// that crashes or hangs while loading (its constructors run before any
    /// check) is reported, not fatal.
    Inspect(inspect::InspectArgs),
    /// Run plugin files through the host's checks, without a server, and
    /// report each check pass, fail or skip with its reason: constructors
    /// beyond the Rust runtime's are flagged, the library loads (sha256,
    /// ELF, dependencies, ABI and root-module layout), its root module has
    /// the fields of every ABI version it claims, its function table reads,
    /// an instance is created and dropped with an empty configuration,
    /// functions called without their required parameters answer
    /// `invalid_argument`, a panic comes back as an error, stream functions
    /// stop within 2 s of cancellation, and 1,000 instance create/drop
    /// cycles do not grow memory.
    ///
    /// Each file is checked in a child process, so a library that crashes or
    /// hangs gets a verdict naming the check. The exit status is 0 only when
    /// no check of any file fails (else 2).
    Check(check::CheckArgs),
    /// Create a plugin crate (in `./NAME`) that builds, tests with
    /// `MockCall` and passes `plugin check` as it is, with the lean release
    /// profile.
    New(new::NewArgs),
    /// The child side of `plugin check` (one file, a JSON report).
    #[command(name = "__check-one", hide = true)]
    CheckOne {
        /// The file.
        file: std::path::PathBuf,
    },
}

/// Parses an isolation tier flag (`--isolation`), listing the tiers in
/// `--help` and in the error for any other word.
fn isolation_parser() -> impl clap::builder::TypedValueParser<Value = spearlet::isolate::Isolation>
{
    use clap::builder::TypedValueParser as _;
    use spearlet::isolate::Isolation;
    clap::builder::PossibleValuesParser::new([
        Isolation::InProcess.as_str(),
        Isolation::Process.as_str(),
    ])
    .try_map(|tier| tier.parse::<Isolation>())
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Invoke(args) => client::invoke(&args),
        Command::Tasks(args) => client::tasks(&args).map(|()| ExitCode::SUCCESS),
        Command::Task(command) => client::task(&command),
        Command::Executions(args) => client::executions(&args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => client::status(&args),
        Command::Cancel(args) => client::cancel(&args),
        Command::Health(args) => client::health(&args).map(|()| ExitCode::SUCCESS),
        Command::Plugin(PluginCommand::Inspect(args)) => inspect::run(&args),
        Command::Plugin(PluginCommand::Check(args)) => check::run(&args),
        Command::Plugin(PluginCommand::New(args)) => new::run(&args),
        Command::Plugin(PluginCommand::CheckOne { file }) => check::run_child(&file),
    }
}
