//! `spearlet plugin check`: a plugin through the host's checks, without a
//! server, each check reported pass or fail with its reason.
//!
//! Each file is checked in a short-lived child process (this binary, run
//! with a hidden subcommand), because loading a library runs its ELF
//! constructors before any check can: a library that crashes, aborts or
//! hangs while loading yields a verdict, bounded by `--timeout`, instead of
//! taking the tool down. The child reports each check as it goes, so a
//! check that kills it (a panic in a library built with `panic = "abort"`)
//! is named in the verdict.

mod checks;
mod report;
mod stream;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use report::{Outcome, Report};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Plugin files (shared libraries).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// How to report: `text` for people, `json` for tools, `junit` for a
    /// CI system to publish.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Time allowed per file (loading included), e.g. `30s`; a library that
    /// hangs past it is reported as such.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let reports: Vec<Report> = args
        .files
        .iter()
        .map(|file| check_in_child(file, args.timeout))
        .collect::<anyhow::Result<_>>()?;
    let shown = match args.format {
        Format::Text => report::text(&reports),
        Format::Json => serde_json::to_string_pretty(&reports)? + "\n",
        Format::Junit => report::junit(&reports),
    };
    print!("{shown}");
    Ok(if reports.iter().all(Report::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// What the child prints, one JSON line each, as the checks go: the parent
/// still knows which check was running if the plugin kills the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChildLine {
    Begin(String),
    Outcome(Outcome),
}

/// The hidden subcommand the child runs: checks one file, reporting as it
/// goes.
pub fn run_child(file: &Path) -> anyhow::Result<ExitCode> {
    let print = |line: &ChildLine| {
        // One line per write: stdout is line-buffered, so each reaches the
        // parent before the next check can kill this process.
        if let Ok(json) = serde_json::to_string(line) {
            println!("{json}");
        }
    };
    checks::check_file(
        file,
        &mut |check| print(&ChildLine::Begin(check.to_owned())),
        &mut |outcome| print(&ChildLine::Outcome(outcome)),
    );
    Ok(ExitCode::SUCCESS)
}

fn check_in_child(file: &Path, timeout: Duration) -> anyhow::Result<Report> {
    let mut child = Command::new(std::env::current_exe().context("where this binary is")?)
        .args(["plugin", "__check-one"])
        .arg(file)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the checking process")?;
    let stdout = child.stdout.take().context("the child's output")?;
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<ChildLine>(&line).ok())
            .collect::<Vec<_>>()
    });
    let status = super::child::wait_bounded(&mut child, timeout)?;
    let lines = reader.join().unwrap_or_default();
    let mut outcomes = Vec::new();
    let mut running: Option<String> = None;
    for line in lines {
        match line {
            ChildLine::Begin(check) => running = Some(check),
            ChildLine::Outcome(outcome) => {
                if running.as_deref() == Some(outcome.check.as_str()) {
                    running = None;
                }
                outcomes.push(outcome);
            }
        }
    }
    let ended_well = status.is_some_and(|s| s.success());
    if !ended_well {
        let check = running.unwrap_or_else(|| "loads".to_owned());
        let detail = died(&check, status, timeout);
        outcomes.push(Outcome::judged(&check, false, detail));
    }
    Ok(Report {
        file: file.display().to_string(),
        outcomes,
    })
}

/// Why the child ended without finishing `check`.
fn died(check: &str, status: Option<ExitStatus>, timeout: Duration) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(status) = status else {
        return if check == "loads" {
            format!(
                "the library did not finish loading within {timeout:?} (a constructor that hangs?)"
            )
        } else {
            format!("checking did not finish within {timeout:?}: this check was still running")
        };
    };
    match (check, status.signal()) {
        ("loads", Some(signal)) => format!(
            "the library killed the checking process (signal {signal}) while loading: it crashed or aborted"
        ),
        ("panic barrier", Some(signal)) => format!(
            "a panic inside the plugin killed the process (signal {signal}) instead of coming \
             back as an error: built with panic = \"abort\", or a panic hook that aborts? \
             A host would go down with the plugin's first panic"
        ),
        (_, Some(signal)) => format!(
            "the plugin killed the checking process (signal {signal}) during this check"
        ),
        (_, None) => format!("the checking process failed ({status}) during this check"),
    }
}
