//! Telling the SMS where node-API executions stand (`docs/cluster.md`,
//! "Reports to the SMS"): each execution when it starts and when it ends,
//! and its instance — RUNNING with the execution while it runs, IDLE with
//! no execution after, so SPEAR's gateway never takes a finished execution
//! for a live one. Reports queue and never hold a call up; outside a
//! cluster they cost nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::Entry;
use crate::exec::{ExecutionError, ExecutionStatus};
use crate::host::Host;
use crate::sms::{
    ExecutionReport, InstanceReport, ReportedInstanceStatus, ReportedStatus, Reporter,
};

/// The instance id prefix of executions that ended before they got an
/// instance (a task that would not load, bad input, a termination).
pub const UNPLACED_PREFIX: &str = "unplaced-";

/// One execution's identity, as every report of it repeats.
#[derive(Debug, Clone)]
pub struct Subject {
    /// Its id.
    pub execution_id: Arc<str>,
    /// The caller's invocation id.
    pub invocation_id: Arc<str>,
    /// Its task.
    pub task_id: Arc<str>,
    /// Its function.
    pub function: Arc<str>,
    /// The instance it runs on ("" while it has none).
    pub instance_id: Arc<str>,
    /// When it started.
    pub started_at: SystemTime,
}

impl Subject {
    /// The node-API execution `entry`, on `instance_id`, started at
    /// `started_at`.
    pub fn of(entry: &Entry, instance_id: Arc<str>, started_at: SystemTime) -> Self {
        Subject {
            execution_id: Arc::clone(&entry.execution_id),
            invocation_id: Arc::clone(&entry.invocation_id),
            task_id: Arc::clone(&entry.task_id),
            function: entry.function(),
            instance_id,
            started_at,
        }
    }
}

fn reporter(host: &Host) -> Option<&Reporter> {
    host.sms().map(|sms| sms.reports())
}

/// It runs on its instance now.
pub fn started(host: &Host, subject: &Subject) {
    let Some(reports) = reporter(host) else {
        return;
    };
    reports.execution(report(subject, ReportedStatus::Running, None, None));
    reports.instance(InstanceReport {
        instance_id: subject.instance_id.to_string(),
        task_id: subject.task_id.to_string(),
        status: ReportedInstanceStatus::Running,
        created_at: subject.started_at,
        current_execution_id: subject.execution_id.to_string(),
    });
}

/// It ended with `status` (and `error`); its instance serves nothing now
/// (`instance_gone`: it is gone with the execution).
pub fn ended(
    host: &Host,
    subject: &Subject,
    status: ExecutionStatus,
    error: Option<&ExecutionError>,
    completed_at: SystemTime,
    instance_gone: bool,
) {
    let Some(reports) = reporter(host) else {
        return;
    };
    // The SMS refuses an execution without an instance, and files the
    // instance of every execution reported as serving it: one that never
    // got an instance is reported on a placeholder, gone at once.
    let placeholder;
    let (subject, instance_gone) = if subject.instance_id.is_empty() {
        placeholder = Subject {
            instance_id: format!("{UNPLACED_PREFIX}{}", subject.execution_id).into(),
            ..subject.clone()
        };
        (&placeholder, true)
    } else {
        (subject, instance_gone)
    };
    reports.execution(report(subject, reported(status), error, Some(completed_at)));
    reports.instance(InstanceReport {
        instance_id: subject.instance_id.to_string(),
        task_id: subject.task_id.to_string(),
        status: if instance_gone {
            ReportedInstanceStatus::Terminated
        } else {
            ReportedInstanceStatus::Idle
        },
        created_at: subject.started_at,
        current_execution_id: String::new(),
    });
}

/// A pool instance was destroyed on request.
pub fn instance_gone(host: &Host, task_id: &str, instance_id: &str, at: SystemTime) {
    if let Some(reports) = reporter(host) {
        reports.instance(InstanceReport {
            instance_id: instance_id.to_owned(),
            task_id: task_id.to_owned(),
            status: ReportedInstanceStatus::Terminated,
            created_at: at,
            current_execution_id: String::new(),
        });
    }
}

fn report(
    subject: &Subject,
    status: ReportedStatus,
    error: Option<&ExecutionError>,
    completed_at: Option<SystemTime>,
) -> ExecutionReport {
    let mut metadata = BTreeMap::new();
    if let Some(completed) = completed_at {
        let took = completed
            .duration_since(subject.started_at)
            .unwrap_or_default();
        metadata.insert("execution_time_ms".to_owned(), took.as_millis().to_string());
    }
    if let Some(error) = error {
        metadata.insert("error_code".to_owned(), error.code.clone());
        metadata.insert("error_message".to_owned(), error.message.clone());
    }
    ExecutionReport {
        execution_id: subject.execution_id.to_string(),
        invocation_id: subject.invocation_id.to_string(),
        task_id: subject.task_id.to_string(),
        function_name: subject.function.to_string(),
        instance_id: subject.instance_id.to_string(),
        status,
        started_at: subject.started_at,
        completed_at,
        metadata,
    }
}

fn reported(status: ExecutionStatus) -> ReportedStatus {
    match status {
        ExecutionStatus::Pending => ReportedStatus::Pending,
        ExecutionStatus::Running => ReportedStatus::Running,
        ExecutionStatus::Completed => ReportedStatus::Completed,
        ExecutionStatus::Failed => ReportedStatus::Failed,
        ExecutionStatus::Cancelled => ReportedStatus::Cancelled,
        ExecutionStatus::Timeout => ReportedStatus::Timeout,
    }
}
