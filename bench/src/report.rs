//! What a run measured, printed as a table and written as `summary.json`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::stats;

/// The rows, notes and extra figures of one run.
#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
    pub extra: BTreeMap<&'static str, serde_json::Value>,
}

/// One measured goal.
pub struct Row {
    id: &'static str,
    key: &'static str,
    what: &'static str,
    value: stats::Summary,
    unit: &'static str,
    goal: &'static str,
    met: bool,
}

impl Row {
    pub fn new(
        (id, key): (&'static str, &'static str),
        what: &'static str,
        value: stats::Summary,
        unit: &'static str,
        goal: &'static str,
        met: impl Fn(&stats::Summary) -> bool,
    ) -> Row {
        Row {
            id,
            key,
            what,
            met: met(&value),
            value,
            unit,
            goal,
        }
    }
}

pub fn at_most(goal: f64) -> impl Fn(&stats::Summary) -> bool {
    move |s| s.median <= goal
}

pub fn at_least(goal: f64) -> impl Fn(&stats::Summary) -> bool {
    move |s| s.median >= goal
}

impl Report {
    /// Prints the table and the notes.
    pub fn print(&self, quick: bool) {
        let rows = &self.rows;
        let notes = &self.notes;
        println!(
            "spearlet-bench{} on {} ({} cores)",
            if quick { " --quick" } else { "" },
            crate::machine(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "{:<3} {:<38} {:>10} {:>10} {:>10} {:<4} {:<12} met?",
            "id", "measure", "median", "min", "max", "", "goal"
        );
        for r in rows {
            println!(
                "{:<3} {:<38} {:>10.3} {:>10.3} {:>10.3} {:<4} {:<12} {}",
                r.id,
                r.what,
                r.value.median,
                r.value.min,
                r.value.max,
                r.unit,
                r.goal,
                if r.met { "yes" } else { "NO" }
            );
        }
        println!();
        for note in notes {
            println!("{note}");
        }
    }

    /// Writes the medians, by key, as JSON to `out`.
    pub fn write(&self, quick: bool, out: &Path) -> anyhow::Result<()> {
        let mut summary: BTreeMap<&str, serde_json::Value> = self
            .rows
            .iter()
            .map(|r| (r.key, serde_json::json!(r.value.median)))
            .collect();
        summary.extend(self.extra.clone());
        summary.insert("quick", serde_json::json!(quick));
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&summary)? + "\n")?;
        println!("\nwrote {}", out.display());
        Ok(())
    }
}
