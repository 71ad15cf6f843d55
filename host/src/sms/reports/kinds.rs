//! What a report says: an execution's or an instance's state as the SMS
//! records it, and what the reporter has done so far.

use std::collections::BTreeMap;
use std::time::SystemTime;

use spearlet_proto::sms::{ExecutionStatus, InstanceStatus};

/// An execution's status, as reported (the SMS's `ExecutionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedStatus {
    /// Accepted, not started.
    Pending,
    /// Running.
    Running,
    /// Ended with a result.
    Completed,
    /// Ended with an error.
    Failed,
    /// Cancelled (SPEAR's "terminated").
    Cancelled,
    /// Ran out of time.
    Timeout,
}

impl ReportedStatus {
    /// Whether the execution has ended (its report is the final one).
    pub const fn is_final(self) -> bool {
        !matches!(self, ReportedStatus::Pending | ReportedStatus::Running)
    }

    pub(super) fn wire(self) -> ExecutionStatus {
        match self {
            ReportedStatus::Pending => ExecutionStatus::Pending,
            ReportedStatus::Running => ExecutionStatus::Running,
            ReportedStatus::Completed => ExecutionStatus::Completed,
            ReportedStatus::Failed => ExecutionStatus::Failed,
            ReportedStatus::Cancelled => ExecutionStatus::Cancelled,
            ReportedStatus::Timeout => ExecutionStatus::Timeout,
        }
    }
}

/// An instance's status, as reported (the SMS's `InstanceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportedInstanceStatus {
    /// Serving.
    Running,
    /// Ready, serving nothing.
    Idle,
    /// Going away.
    Terminating,
    /// Gone (its final report).
    Terminated,
}

impl ReportedInstanceStatus {
    pub(super) fn wire(self) -> InstanceStatus {
        match self {
            ReportedInstanceStatus::Running => InstanceStatus::Running,
            ReportedInstanceStatus::Idle => InstanceStatus::Idle,
            ReportedInstanceStatus::Terminating => InstanceStatus::Terminating,
            ReportedInstanceStatus::Terminated => InstanceStatus::Terminated,
        }
    }
}

/// One execution's state, for `ReportExecution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionReport {
    /// The execution's id.
    pub execution_id: String,
    /// The invocation it serves.
    pub invocation_id: String,
    /// Its task (required by the SMS).
    pub task_id: String,
    /// The function it runs.
    pub function_name: String,
    /// The instance running it (required by the SMS).
    pub instance_id: String,
    /// Its status.
    pub status: ReportedStatus,
    /// When it started.
    pub started_at: SystemTime,
    /// When it ended; reported only with a final status.
    pub completed_at: Option<SystemTime>,
    /// Anything else: `execution_time_ms`, `error_message`, ….
    pub metadata: BTreeMap<String, String>,
}

/// One instance's state, for `ReportInstance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceReport {
    /// The instance's id.
    pub instance_id: String,
    /// Its task (required by the SMS).
    pub task_id: String,
    /// Its status.
    pub status: ReportedInstanceStatus,
    /// When it was made.
    pub created_at: SystemTime,
    /// The execution it serves; "" when it serves nothing (the gateway
    /// routes to a live instance's current execution).
    pub current_execution_id: String,
}

/// What the reporter has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportStats {
    /// Reports the SMS answered.
    pub sent: u64,
    /// Attempts that failed (the SMS unreachable, or refusing a report).
    pub failed: u64,
    /// Reports dropped unsent because the queue was full.
    pub dropped: u64,
    /// Reports waiting now (the one being sent included).
    pub queued: usize,
}
