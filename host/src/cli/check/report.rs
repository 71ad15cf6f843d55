//! What `plugin check` found, and its three renderings: text for people,
//! JSON for tools, JUnit XML for a CI system to publish.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Nothing to check, or the plugin gives the check nothing to work
    /// with; never a failure.
    Skip,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub check: String,
    pub verdict: Verdict,
    /// Whether it did not fail (a skipped check did not).
    pub passed: bool,
    pub detail: String,
}

impl Outcome {
    pub fn new(check: &str, verdict: Verdict, detail: impl Into<String>) -> Self {
        Outcome {
            check: check.to_owned(),
            verdict,
            passed: verdict != Verdict::Fail,
            detail: detail.into(),
        }
    }

    pub fn judged(check: &str, passed: bool, detail: impl Into<String>) -> Self {
        Outcome::new(
            check,
            if passed { Verdict::Pass } else { Verdict::Fail },
            detail,
        )
    }
}

/// A file's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub file: String,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.outcomes.is_empty() && self.outcomes.iter().all(|o| o.passed)
    }
}

pub fn text(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        let _ = writeln!(
            out,
            "{}  {}",
            if r.passed() { "PASS" } else { "FAIL" },
            r.file
        );
        for o in &r.outcomes {
            let mark = match o.verdict {
                Verdict::Pass => "ok  ",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            let _ = writeln!(out, "  {mark} {:<20} {}", o.check, o.detail);
        }
    }
    out
}

pub fn junit(reports: &[Report]) -> String {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let count = |verdict| {
        reports
            .iter()
            .map(|r| r.outcomes.iter().filter(|o| o.verdict == verdict).count())
            .sum::<usize>()
    };
    let tests: usize = reports.iter().map(|r| r.outcomes.len()).sum();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"spearlet plugin check\" tests=\"{tests}\" failures=\"{}\" skipped=\"{}\">\n",
        count(Verdict::Fail),
        count(Verdict::Skip)
    );
    for r in reports {
        let of = |verdict| r.outcomes.iter().filter(|o| o.verdict == verdict).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            escape(&r.file),
            r.outcomes.len(),
            of(Verdict::Fail),
            of(Verdict::Skip)
        );
        for o in &r.outcomes {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&r.file),
                escape(&o.check)
            );
            let _ = match o.verdict {
                Verdict::Pass => writeln!(out, "/>"),
                Verdict::Fail => writeln!(
                    out,
                    "><failure message=\"{}\"/></testcase>",
                    escape(&o.detail)
                ),
                Verdict::Skip => writeln!(
                    out,
                    "><skipped message=\"{}\"/></testcase>",
                    escape(&o.detail)
                ),
            };
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}
