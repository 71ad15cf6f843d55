//! Command-line interface: argument definitions and dispatch.

mod inspect;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// spearlet — a function host whose functions are native plugins.
///
/// Plugins are shared libraries built with `spear-plugin-sdk`. spearlet
/// verifies each one's sha256 on the bytes it loads and checks its ABI
/// before running any of its code.
#[derive(Debug, Parser)]
#[command(name = "spearlet", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with plugin files.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load plugin files through the full ABI checks and describe them:
    /// sha256, name and version, SDK and ABI version, function table.
    ///
    /// A refused file gets one line naming the error kind; the exit status
    /// is then 2.
    Inspect(inspect::InspectArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(PluginCommand::Inspect(args)) => inspect::run(&args),
    }
}
