//! How results, statuses and executions are shown.

use std::time::Duration;

use anyhow::bail;
use spearlet_proto::spearlet as pb;

pub(super) const WRAPPER: &str = "type.googleapis.com/google.protobuf.";

/// A task's isolation tier from its `TaskInfo` metadata: `in-process`, or
/// `process` with its memory cap (`process, max 256 MiB`); `-` from a
/// server that does not say.
pub(super) fn show_isolation(metadata: &std::collections::HashMap<String, String>) -> String {
    let Some(tier) = metadata.get("isolation") else {
        return "-".to_owned();
    };
    let mut shown = match metadata.get("memory_max") {
        Some(bytes) => format!("{tier}, max {}", show_bytes(bytes)),
        None => tier.clone(),
    };
    if metadata.get("crash_looping").is_some_and(|v| v == "true") {
        shown.push_str(", crash_looping");
    }
    shown
}

/// A byte count in the largest binary unit that holds it exactly
/// (`268435456` is `256 MiB`), else in bytes.
fn show_bytes(raw: &str) -> String {
    let Ok(n) = raw.parse::<u64>() else {
        return raw.to_owned();
    };
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

pub(super) fn status_name(status: pb::ExecutionStatus) -> &'static str {
    match status {
        pb::ExecutionStatus::Unknown => "unknown",
        pb::ExecutionStatus::Pending => "pending",
        pb::ExecutionStatus::Running => "running",
        pb::ExecutionStatus::Completed => "completed",
        pb::ExecutionStatus::Failed => "failed",
        pb::ExecutionStatus::Cancelled => "cancelled",
        pb::ExecutionStatus::Timeout => "timeout",
    }
}

pub(super) fn describe_status(
    status: pb::ExecutionStatus,
    ms: i64,
    result: &pb::ExecutionResult,
) -> String {
    let micros = result
        .metrics
        .get("execution_time_us")
        .and_then(|m| m.parse::<u64>().ok())
        .map_or_else(
            || format!("{ms} ms"),
            |us| format!("{:.3} ms", us as f64 / 1000.0),
        );
    match status {
        pb::ExecutionStatus::Completed => format!("completed in {micros}"),
        pb::ExecutionStatus::Pending | pb::ExecutionStatus::Running => {
            status_name(status).to_owned()
        }
        // `cancelled: cancelled: …` says nothing twice.
        other if result.error_code == status_name(other) => {
            format!("{}: {}", status_name(other), result.error_message)
        }
        other => format!(
            "{}: {}: {}",
            status_name(other),
            result.error_code,
            result.error_message
        ),
    }
}

pub(super) fn parse_status(s: &str) -> anyhow::Result<pb::ExecutionStatus> {
    Ok(match s {
        "pending" => pb::ExecutionStatus::Pending,
        "running" => pb::ExecutionStatus::Running,
        "completed" => pb::ExecutionStatus::Completed,
        "failed" => pb::ExecutionStatus::Failed,
        "cancelled" => pb::ExecutionStatus::Cancelled,
        "timeout" => pb::ExecutionStatus::Timeout,
        other => bail!("unknown status `{other}`"),
    })
}

pub(super) fn time(ts: Option<&prost_types::Timestamp>) -> String {
    ts.map_or_else(
        || "-".to_owned(),
        |t| {
            let secs = u64::try_from(t.seconds).unwrap_or(0);
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::new(secs, u32::try_from(t.nanos).unwrap_or(0)),
            )
            .to_string()
        },
    )
}

/// Executions as a table under a header, each column as wide as its
/// longest cell (a fixed width misaligned every row after a long one).
pub(super) fn print_executions(executions: &[pb::ExecutionInfo]) {
    for line in execution_table(executions) {
        println!("{line}");
    }
}

fn execution_table(executions: &[pb::ExecutionInfo]) -> Vec<String> {
    let header = [
        "EXECUTION",
        "FUNCTION",
        "STATUS",
        "TIME",
        "STARTED",
        "ERROR",
    ];
    // Indented: it is shown under a task's or a listing's own lines.
    let mut table = super::table::plain(&header, 2, &[3]);
    for e in executions {
        let status = pb::ExecutionStatus::try_from(e.status).unwrap_or_default();
        let error = match (e.metadata.get("error_code"), e.error_message.is_empty()) {
            (Some(code), false) => format!("{code}: {}", e.error_message),
            (Some(code), true) => code.clone(),
            (None, _) => e.error_message.clone(),
        };
        table.add_row(vec![
            e.execution_id.clone(),
            e.function_name.clone(),
            status_name(status).to_owned(),
            format!("{} ms", e.execution_time_ms),
            time(e.started_at.as_ref()),
            error,
        ]);
    }
    super::table::lines(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_of_an_execution_table_lines_up_with_its_header() {
        let row = |function: &str, code: Option<&str>| pb::ExecutionInfo {
            execution_id: "0190a5d0-0000-7000-8000-000000000000".into(),
            function_name: function.into(),
            status: pb::ExecutionStatus::Failed.into(),
            error_message: "went wrong".into(),
            metadata: code
                .map(|c| [("error_code".to_owned(), c.to_owned())].into())
                .unwrap_or_default(),
            ..Default::default()
        };
        let table = execution_table(&[
            row("add", Some("empty_input")),
            row("a_function_with_a_long_name", None),
        ]);
        for (column, cell) in [("STATUS", "failed"), ("STARTED", "-")] {
            let at = table[0].find(column).unwrap();
            for line in &table[1..] {
                assert_eq!(line.get(at..at + cell.len()), Some(cell), "{table:#?}");
            }
        }
        // Right-aligned: the times end under the header's last letter.
        let time_ends = table[0].find("TIME").unwrap() + "TIME".len();
        for line in &table[1..] {
            assert_eq!(&line[time_ends - 4..time_ends], "0 ms", "{table:#?}");
        }
        assert!(
            table[1].ends_with("empty_input: went wrong"),
            "{}",
            table[1]
        );
        assert!(table[2].ends_with("  went wrong"), "{}", table[2]);
        let error_at = table[0].find("ERROR").unwrap();
        assert_eq!(&table[1][error_at..], "empty_input: went wrong");
        assert_eq!(&table[2][error_at..], "went wrong");
    }
}
