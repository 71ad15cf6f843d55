//! `spearlet plugin check`: a plugin through the host's checks, without a
//! server, each check reported pass or fail with its reason.
//!
//! Each file is checked in a short-lived child process (this binary, run
//! with a hidden subcommand), because loading a library runs its ELF
//! constructors before any check can: a library that crashes, aborts or
//! hangs while loading yields a verdict, bounded by `--timeout`, instead of
//! taking the tool down.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use spearlet::loader::{CallRequest, Plugin, PluginInstance};

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

/// One check's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outcome {
    check: String,
    passed: bool,
    detail: String,
}

/// A file's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    file: String,
    outcomes: Vec<Outcome>,
}

impl Report {
    fn passed(&self) -> bool {
        !self.outcomes.is_empty() && self.outcomes.iter().all(|o| o.passed)
    }
}

pub fn run(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let reports: Vec<Report> = args
        .files
        .iter()
        .map(|file| check_in_child(file, args.timeout))
        .collect::<anyhow::Result<_>>()?;
    let shown = match args.format {
        Format::Text => text(&reports),
        Format::Json => serde_json::to_string_pretty(&reports)? + "\n",
        Format::Junit => junit(&reports),
    };
    print!("{shown}");
    Ok(if reports.iter().all(Report::passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The hidden subcommand the child runs: checks one file, prints its
/// report as JSON.
pub fn run_child(file: &Path) -> anyhow::Result<ExitCode> {
    let report = check_here(file);
    println!("{}", serde_json::to_string(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn check_in_child(file: &Path, timeout: Duration) -> anyhow::Result<Report> {
    let name = file.display().to_string();
    let mut child = Command::new(std::env::current_exe().context("where this binary is")?)
        .args(["plugin", "__check-one"])
        .arg(file)
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the checking process")?;
    let mut stdout = child.stdout.take().context("the child's output")?;
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = super::child::wait_bounded(&mut child, timeout)?;
    let out = reader.join().unwrap_or_default();
    let verdict = |detail: String| Report {
        file: name.clone(),
        outcomes: vec![Outcome {
            check: "loads".to_owned(),
            passed: false,
            detail,
        }],
    };
    Ok(match status {
        None => verdict(format!(
            "the library did not finish loading and checking within {timeout:?} (a constructor that hangs?)"
        )),
        Some(status) => match out.lines().last().map(serde_json::from_str::<Report>) {
            Some(Ok(report)) => report,
            _ => {
                use std::os::unix::process::ExitStatusExt;
                verdict(match status.signal() {
                    Some(signal) => format!(
                        "the library killed the checking process (signal {signal}) while loading or running: it crashed or aborted"
                    ),
                    None => format!("the checking process failed ({status}) before it could report"),
                })
            }
        },
    })
}

/// The checks, in this process (the child).
fn check_here(file: &Path) -> Report {
    let mut outcomes = Vec::new();
    let mut pass = |check: &str, passed: bool, detail: String| {
        outcomes.push(Outcome {
            check: check.to_owned(),
            passed,
            detail,
        });
    };
    let plugin = match Plugin::load_verified(file, None) {
        Ok(plugin) => plugin,
        Err(e) => {
            pass("loads", false, format!("{}: {e}", e.kind()));
            return Report {
                file: file.display().to_string(),
                outcomes,
            };
        }
    };
    pass(
        "loads",
        true,
        format!(
            "sha256:{} verified; ELF, dependencies ({}), ABI {} and root-module layout accepted",
            plugin.digest(),
            plugin.needed_libraries().join(", "),
            plugin.abi_version()
        ),
    );
    let unreadable: Vec<&str> = plugin
        .functions()
        .iter()
        .filter(|f| spearlet::signature::params(&f.signature).is_none())
        .map(|f| f.name.as_str())
        .collect();
    pass(
        "function table",
        unreadable.is_empty(),
        if unreadable.is_empty() {
            format!(
                "{} function(s), unique names, readable signatures",
                plugin.functions().len()
            )
        } else {
            format!("signatures that cannot be read: {}", unreadable.join(", "))
        },
    );
    match PluginInstance::new(&plugin, &[]) {
        Ok(instance) => {
            drop(instance);
            pass(
                "instance",
                true,
                "created with an empty configuration, and dropped".to_owned(),
            );
        }
        Err(e) => {
            pass("instance", false, format!("{}: {e}", e.kind()));
            return Report {
                file: file.display().to_string(),
                outcomes,
            };
        }
    }
    let (ok, detail) = missing_parameters(&plugin);
    pass("missing parameters", ok, detail);
    let (ok, detail) = churn(&plugin);
    pass("instance churn", ok, detail);
    Report {
        file: file.display().to_string(),
        outcomes,
    }
}

/// Every function that takes a required parameter, called without any,
/// must answer `invalid_argument` — never run, never panic.
fn missing_parameters(plugin: &std::sync::Arc<Plugin>) -> (bool, String) {
    let mut problems = Vec::new();
    let mut tried = 0;
    for f in plugin.functions() {
        let needs = spearlet::signature::params(&f.signature)
            .is_some_and(|p| p.iter().any(|p| !p.optional));
        if !needs {
            continue;
        }
        tried += 1;
        let Ok(handle) = plugin.function(&f.name) else {
            continue;
        };
        let mut instance = match PluginInstance::new(plugin, &[]) {
            Ok(i) => i,
            Err(e) => return (false, format!("{}: {e}", e.kind())),
        };
        // Raised: a stream or loop that did start would stop at once.
        let cancelled = AtomicBool::new(true);
        let request = CallRequest::new("plugin-check", &cancelled);
        match instance.call(handle, &request) {
            Err(spearlet::Error::PluginFailed { code, .. }) if code == "invalid_argument" => {}
            Err(e) => problems.push(format!("{}: {} ({e})", f.name, e.kind())),
            Ok(_) => problems.push(format!("{}: ran without its parameters", f.name)),
        }
    }
    if problems.is_empty() {
        (
            true,
            format!(
                "{tried} function(s) with required parameters answer invalid_argument without them"
            ),
        )
    } else {
        (false, problems.join("; "))
    }
}

/// 1,000 instances created and dropped must not grow the process: a
/// constructor or destructor that leaks would sink a long-running host.
fn churn(plugin: &std::sync::Arc<Plugin>) -> (bool, String) {
    const CYCLES: usize = 1_000;
    const ALLOWED_GROWTH: u64 = 4 << 20;
    // Warm up the allocator's pools first, so they do not read as growth.
    for _ in 0..50 {
        drop(PluginInstance::new(plugin, &[]));
    }
    let before = spearlet::metrics::resident_bytes();
    for _ in 0..CYCLES {
        if let Err(e) = PluginInstance::new(plugin, &[]) {
            return (false, format!("{}: {e}", e.kind()));
        }
    }
    let grown = spearlet::metrics::resident_bytes().saturating_sub(before);
    (
        grown <= ALLOWED_GROWTH,
        format!(
            "{CYCLES} create/drop cycles grew resident memory by {:.1} MiB (allowed {} MiB)",
            grown as f64 / f64::from(1 << 20),
            ALLOWED_GROWTH >> 20
        ),
    )
}

fn text(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(
            out,
            "{}  {}",
            if r.passed() { "PASS" } else { "FAIL" },
            r.file
        );
        for o in &r.outcomes {
            let _ = writeln!(
                out,
                "  {} {:<20} {}",
                if o.passed { "ok  " } else { "FAIL" },
                o.check,
                o.detail
            );
        }
    }
    out
}

fn junit(reports: &[Report]) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let tests: usize = reports.iter().map(|r| r.outcomes.len()).sum();
    let failures: usize = reports
        .iter()
        .map(|r| r.outcomes.iter().filter(|o| !o.passed).count())
        .sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"spearlet plugin check\" tests=\"{tests}\" failures=\"{failures}\">\n"
    );
    for r in reports {
        let failed = r.outcomes.iter().filter(|o| !o.passed).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\">",
            escape(&r.file),
            r.outcomes.len()
        );
        for o in &r.outcomes {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&r.file),
                escape(&o.check)
            );
            if o.passed {
                let _ = writeln!(out, "/>");
            } else {
                let _ = writeln!(
                    out,
                    "><failure message=\"{}\"/></testcase>",
                    escape(&o.detail)
                );
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
