//! `spearlet plugin check` against libraries that try to forge or outlast
//! its verdict (see the hostile fixture's source for what each mode does).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use spearlet_test_artifacts::Artifact;

use crate::{path, spearlet, text};

/// What the hostile fixture's forged report lines say.
const FORGED: &str = "forged by the constructor";

/// How `plugin check` ended on `file` with the hostile fixture's
/// constructor in `mode`: exit code, stdout, and how long it took.
fn check(
    file: &Path,
    mode: &str,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .args(["plugin", "check"])
        .arg(file)
        .args(extra)
        .env("SPEARLET_FIXTURE_CONSTRUCTOR", mode)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stdout), started.elapsed())
}

/// Each outcome of a JSON report: check, verdict, detail.
fn outcomes(json: &str) -> Vec<(String, String, String)> {
    let reports: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    reports[0]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let field = |name: &str| o[name].as_str().unwrap().to_owned();
            (field("check"), field("verdict"), field("detail"))
        })
        .collect()
}

/// Check and verdict of each outcome.
fn verdicts(json: &str) -> Vec<(String, String)> {
    outcomes(json).into_iter().map(|(c, v, _)| (c, v)).collect()
}

/// A copy of `file` with its section headers gone, as the dynamic loader
/// (which never reads them) still loads it.
fn without_section_headers(file: &Path, dir: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[40..48].fill(0); // e_shoff
    bytes[58..64].fill(0); // e_shentsize, e_shnum, e_shstrndx
    let copy = dir.join(file.file_name().unwrap());
    std::fs::write(&copy, bytes).unwrap();
    copy
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet),
/// waiting up to 5 s for it to.
fn ended(pid: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let over = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z')),
        };
        if over || Instant::now() >= until {
            return over;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (a) A constructor that prints a passing report on stdout and stderr —
/// every check, in the report's own line format — changes nothing: the
/// verdicts are those of the same library left quiet. Before the report
/// had a channel of its own, those lines were read as outcomes.
#[test]
fn a_report_the_plugin_prints_is_never_read_as_its_verdict() {
    let hostile = Artifact::HostileConstructor.path();
    let (code, quiet, _) = check(hostile, "none", &["--format", "json"], &[]);
    assert_eq!(code, Some(2), "{quiet}");
    let (code, forged, _) = check(hostile, "forge", &["--format", "json"], &[]);
    assert_eq!(code, Some(2), "{forged}");
    assert_eq!(verdicts(&forged), verdicts(&quiet));
    assert!(
        outcomes(&forged)
            .iter()
            .all(|(_, _, d)| !d.contains(FORGED)),
        "{forged}"
    );
}

/// (a) Printing a passing report and then exiting with status 0 from the
/// constructor, before the child could report a thing, fails the check it
/// was in; what it printed is shown, quoted on that one line.
#[test]
fn a_plugin_that_forges_its_report_and_exits_fails_the_check_it_was_in() {
    let hostile = Artifact::HostileConstructor.path();
    let (code, json, _) = check(hostile, "forge-exit", &["--format", "json"], &[]);
    assert_eq!(code, Some(2), "{json}");
    let outcomes = outcomes(&json);
    let checks: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|(c, v, _)| (c.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        checks,
        [("constructors", "fail"), ("loads", "fail")],
        "{json}"
    );
    assert!(
        outcomes[1].2.contains("before reporting it")
            && outcomes[1].2.contains("its output began: \""),
        "{json}"
    );

    let (code, shown, _) = check(hostile, "forge-exit", &[], &[]);
    assert_eq!(code, Some(2), "{shown}");
    assert_eq!(shown.lines().count(), 3, "{shown}");
    assert!(!shown.lines().any(|l| l.starts_with("  ok")), "{shown}");
}

/// The child's hidden subcommand reports only to a `plugin check` that
/// opened it a channel: run by hand, it refuses, and prints no report.
#[test]
fn the_checking_subcommand_refuses_to_run_without_its_channel() {
    let out = spearlet(&["plugin", "__check-one", path(Artifact::Echo)]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("run `spearlet plugin check` instead"));
}

/// (b) With its section headers gone, a library's constructor is still
/// found — in its dynamic section, as the dynamic loader finds it — and,
/// unnamed, counted against the toolchain's own. A sample plugin stripped
/// the same way still passes: its entries are no more than the toolchain's.
#[test]
fn a_library_without_section_headers_cannot_hide_its_constructor() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = without_section_headers(Artifact::HostileConstructor.path(), dir.path());
    let (code, shown, _) = check(&hostile, "none", &[], &[]);
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("FAIL constructors         runs code at load time")
            && shown.contains("an unnamed function (0x")
            && shown.contains("4 unnamed"),
        "{shown}"
    );
    assert!(shown.contains("ok   loads"), "it still loads: {shown}");

    let echo = without_section_headers(Artifact::Echo.path(), dir.path());
    let (code, shown, _) = check(&echo, "none", &[], &[]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("ok   constructors         3 constructor(s), the toolchain's own"),
        "{shown}"
    );
}

/// (a) and (b) at once: stripped of its section headers, the library's
/// constructor once went unseen, and its forged report then read as a pass
/// of every check. Now neither gets through.
#[test]
fn a_stripped_library_that_forges_its_report_still_fails() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = without_section_headers(Artifact::HostileConstructor.path(), dir.path());
    let (code, json, _) = check(&hostile, "forge-exit", &["--format", "json"], &[]);
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(
        verdicts(&json),
        [
            ("constructors".to_owned(), "fail".to_owned()),
            ("loads".to_owned(), "fail".to_owned())
        ],
        "{json}"
    );
}

/// (c) A constructor that starts a process holding the child's stdout and
/// stderr for 30 s, then hangs: the check ends at its timeout all the same
/// (it once waited for the output to close), and the grandchild, in the
/// child's process group, is killed with it.
#[test]
fn a_grandchild_holding_the_output_open_does_not_outlast_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let hostile = Artifact::HostileConstructor.path();
    let (code, shown, took) = check(
        hostile,
        "grandchild-hang",
        &["--timeout", "1s"],
        &[("SPEARLET_FIXTURE_PIDFILE", &pidfile)],
    );
    assert_eq!(code, Some(2), "{shown}");
    assert!(
        shown.contains("did not finish loading within 1s"),
        "{shown}"
    );
    // A bound well under the grandchild's 30 s, not a measurement.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(ended(&pid), "the grandchild {pid} outlived the check");
}

/// (c) A grandchild left running by a library that otherwise loads and
/// checks normally: the verdict is the quiet library's, it comes as soon as
/// the child is done, and the grandchild does not outlive the check.
#[test]
fn a_grandchild_left_behind_is_killed_when_the_check_ends() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let hostile = Artifact::HostileConstructor.path();
    let (_, quiet, _) = check(hostile, "none", &["--format", "json"], &[]);
    let (code, json, took) = check(
        hostile,
        "grandchild",
        &["--format", "json"],
        &[("SPEARLET_FIXTURE_PIDFILE", &pidfile)],
    );
    assert_eq!(code, Some(2), "{json}");
    assert_eq!(verdicts(&json), verdicts(&quiet));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    assert!(ended(&pid), "the grandchild {pid} outlived the check");
}
