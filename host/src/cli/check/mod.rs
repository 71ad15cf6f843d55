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
//!
//! The child reports on a channel of its own, never on stdout or stderr:
//! the plugin runs in the child and may print anything there, including
//! lines shaped like a report. Its report is read strictly, in the order
//! the checks run and ended by an explicit end, so one that stops short
//! (the plugin ended the process) or breaks that order is a failure, not a
//! pass. What the file itself says (`constructors`) is judged here, in the
//! parent, where no code of the plugin's runs. The plugin's code does run
//! in the child, and could write to the channel itself; to go unnoticed it
//! would have to keep to the report's order, and code that runs at load
//! time is what `constructors` flags, from here.

mod checks;
mod report;
mod stream;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use checks::{IN_CHILD, STOPS_ON_FAILURE};
use report::{Outcome, Report, Verdict};
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

/// What the child sends on its report channel, one JSON line each, as the
/// checks go: the parent still knows which check was running if the plugin
/// kills the child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChildLine {
    Begin(String),
    Outcome(Outcome),
    /// Every check that was to run has reported: the report is whole.
    End,
}

/// The hidden subcommand the child runs: checks one file, reporting as it
/// goes on the channel the parent opened for it.
pub fn run_child(file: &Path) -> anyhow::Result<ExitCode> {
    // Taken before anything of the plugin is loaded.
    let channel = super::child::report_channel()?;
    let send = |line: &ChildLine| {
        // One write per line, each reaching the parent before the next
        // check can kill this process.
        if let Ok(mut json) = serde_json::to_string(line) {
            json.push('\n');
            let _ = (&channel).write_all(json.as_bytes());
        }
    };
    checks::check_file(
        file,
        &mut |check| send(&ChildLine::Begin(check.to_owned())),
        &mut |outcome| send(&ChildLine::Outcome(outcome)),
    );
    send(&ChildLine::End);
    Ok(ExitCode::SUCCESS)
}

fn check_in_child(file: &Path, timeout: Duration) -> anyhow::Result<Report> {
    let constructors = checks::constructors(file);
    let mut command = Command::new(std::env::current_exe().context("where this binary is")?);
    command
        .args(["plugin", "__check-one"])
        .arg(file)
        .env("RUST_LOG", "off");
    let finished =
        super::child::run_reporting(command, timeout).context("cannot run the checking process")?;
    let heard = Heard::from_report(&finished.report);
    let trouble = match (&heard.broken, finished.status) {
        (Some(why), _) => Some(format!(
            "its report broke off: {why}. Only the checking process writes its report, so \
             code in the plugin wrote there"
        )),
        (None, Some(status)) if status.success() && heard.ended => None,
        (None, status) => Some(died(heard.current(), status, heard.ended, timeout)),
    };
    let mut outcomes = vec![constructors];
    let current = heard.current().map(str::to_owned);
    outcomes.extend(heard.outcomes);
    if let Some(mut detail) = trouble {
        if !finished.output.is_empty() {
            detail.push_str("; its output began: ");
            detail.push_str(&excerpt(&finished.output));
        }
        match current {
            Some(check) => outcomes.push(Outcome::judged(&check, false, detail)),
            // Every check had reported: the process failed on its way out,
            // which the last check's verdict carries.
            None => {
                if let Some(last) = outcomes.last_mut() {
                    last.verdict = Verdict::Fail;
                    last.passed = false;
                    last.detail.push_str("; then ");
                    last.detail.push_str(&detail);
                }
            }
        }
    }
    Ok(Report {
        file: file.display().to_string(),
        outcomes,
    })
}

/// The child's report, read strictly: each check of [`IN_CHILD`] in turn,
/// begun (if at all) just before its outcome, until the checks run out or
/// one that stops the run fails; then the end.
#[derive(Debug, Default)]
struct Heard {
    outcomes: Vec<Outcome>,
    /// The check begun and not yet reported.
    running: Option<String>,
    /// The report was whole.
    ended: bool,
    /// Where the report left that order.
    broken: Option<String>,
}

impl Heard {
    fn from_report(report: &[u8]) -> Heard {
        let mut heard = Heard::default();
        let mut lines: Vec<&[u8]> = report.split(|&b| b == b'\n').collect();
        // What follows the last newline: empty, or a line cut off by the
        // child's death. Never a line.
        lines.pop();
        for (n, line) in lines.into_iter().enumerate() {
            if let Err(why) = heard.take(line) {
                heard.broken = Some(format!("line {}: {why}", n + 1));
                break;
            }
        }
        heard
    }

    fn take(&mut self, line: &[u8]) -> Result<(), String> {
        if self.ended {
            return Err("a line after its end".to_owned());
        }
        let line: ChildLine = serde_json::from_slice(line)
            .map_err(|_| format!("not a report line: {}", excerpt(line)))?;
        let due = self.due();
        match line {
            ChildLine::Begin(check) => {
                if self.running.is_some() || due != Some(check.as_str()) {
                    return Err(format!("`{check}` begun out of turn"));
                }
                self.running = Some(check);
            }
            ChildLine::Outcome(outcome) => {
                let begun = self.running.as_deref();
                if due != Some(outcome.check.as_str()) || begun.is_some_and(|b| b != outcome.check)
                {
                    return Err(format!("an outcome of `{}` out of turn", outcome.check));
                }
                self.running = None;
                self.outcomes.push(outcome);
            }
            ChildLine::End => {
                if self.running.is_some() || due.is_some() {
                    return Err("its end, before every check had reported".to_owned());
                }
                self.ended = true;
            }
        }
        Ok(())
    }

    /// The check due to report next; `None` when none is.
    fn due(&self) -> Option<&'static str> {
        match self.outcomes.last() {
            Some(last) if !last.passed && STOPS_ON_FAILURE.contains(&last.check.as_str()) => None,
            _ => IN_CHILD.get(self.outcomes.len()).copied(),
        }
    }

    /// The check under way when the report stopped: the one begun, else
    /// the one due. `None` once every check has reported.
    fn current(&self) -> Option<&str> {
        self.running.as_deref().or(self.due())
    }
}

/// Text from the plugin's process, shown on one line, quoted and escaped,
/// so that it can never pass for a line of the report around it.
fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 300;
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let cut: String = text.chars().take(SHOWN).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("\"{}\"{more}", cut.escape_debug())
}

/// Why the child ended without finishing `check` (`None`: after every
/// check had reported): it ran out of time (`status` is `None`), was killed
/// or failed, or ended quietly without finishing its report (`ended` says
/// whether it did).
fn died(check: Option<&str>, status: Option<ExitStatus>, ended: bool, timeout: Duration) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(check) = check else {
        return match status {
            Some(status) => format!(
                "the checking process failed ({status}) on its way out, after every check \
                 had reported"
            ),
            None => format!(
                "the checking process did not end within {timeout:?}, after every check had \
                 reported"
            ),
        };
    };
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
        ("loads", None) if !ended => format!(
            "the checking process ended ({status}) while the library loaded, before reporting \
             it: a constructor that exits the process?"
        ),
        (_, None) if !ended => format!(
            "the checking process ended ({status}) during this check, before reporting it: the \
             plugin exited the process?"
        ),
        (_, None) => format!("the checking process failed ({status}) during this check"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    fn outcome(check: &str, passed: bool) -> String {
        let line = ChildLine::Outcome(Outcome::judged(check, passed, "real"));
        serde_json::to_string(&line).unwrap()
    }

    #[test]
    fn a_whole_report_is_heard_in_order() {
        let mut lines = vec![r#"{"begin":"loads"}"#.to_owned()];
        for check in IN_CHILD {
            lines.push(outcome(check, true));
        }
        lines.push(r#""end""#.to_owned());
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let heard = Heard::from_report(&report(&lines));
        assert!(heard.ended && heard.broken.is_none(), "{heard:?}");
        assert_eq!(heard.outcomes.len(), IN_CHILD.len());
        assert_eq!(heard.current(), None);
    }

    #[test]
    fn a_run_stopped_by_a_failed_load_ends_there() {
        let failed = outcome("loads", false);
        let heard = Heard::from_report(&report(&[r#"{"begin":"loads"}"#, &failed, r#""end""#]));
        assert!(heard.ended && heard.broken.is_none(), "{heard:?}");
        // A failed abi check does not stop the run: an end there is early.
        let heard = Heard::from_report(&report(&[
            &outcome("loads", true),
            &outcome("abi", false),
            r#""end""#,
        ]));
        assert!(heard
            .broken
            .is_some_and(|b| b.contains("before every check")));
    }

    /// Lines out of turn, repeated, unknown, or after the end break the
    /// report where they stand; what came before is kept.
    #[test]
    fn a_report_out_of_order_is_broken() {
        for (lines, why) in [
            (vec![outcome("abi", true)], "`abi` out of turn"),
            (
                vec![outcome("loads", true), outcome("loads", true)],
                "`loads` out of turn",
            ),
            (
                vec![r#"{"begin":"loads"}"#.to_owned(), outcome("abi", true)],
                "`abi` out of turn",
            ),
            (
                vec![
                    outcome("loads", false),
                    r#""end""#.to_owned(),
                    r#""end""#.to_owned(),
                ],
                "after its end",
            ),
            (vec!["PASS everything".to_owned()], "not a report line"),
            (
                vec![r#"{"begin":"constructors"}"#.to_owned()],
                "begun out of turn",
            ),
        ] {
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let heard = Heard::from_report(&report(&lines));
            let broken = heard.broken.clone().unwrap_or_default();
            assert!(broken.contains(why), "{why}: {heard:?}");
        }
        let heard = Heard::from_report(&report(&[&outcome("loads", true), "{}"]));
        assert_eq!(heard.outcomes.len(), 1);
        assert_eq!(heard.current(), Some("abi"));
    }

    /// A line the child's death cut off is not a line.
    #[test]
    fn a_line_cut_off_is_dropped() {
        let mut bytes = report(&[r#"{"begin":"loads"}"#]);
        bytes.extend_from_slice(br#"{"outcome":{"check":"loa"#);
        let heard = Heard::from_report(&bytes);
        assert!(heard.broken.is_none());
        assert_eq!(heard.current(), Some("loads"));
    }

    #[test]
    fn plugin_output_is_shown_on_one_quoted_line() {
        let shown = excerpt(b"  ok   loads fine\n{\"end\"}\n\x1b[2J");
        assert_eq!(shown, r#""ok   loads fine\n{\"end\"}\n\u{1b}[2J""#);
        assert!(excerpt(&[b'x'; 1000]).ends_with("\"…"));
    }
}
