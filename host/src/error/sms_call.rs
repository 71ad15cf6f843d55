//! Which call to the SMS an error is about: part of the error's context,
//! so it lives here (the `error` module depends on nothing else of the
//! crate); `crate::sms` re-exports it.

use std::fmt;

/// A call spearlet makes to the SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmsCall {
    /// `sms.NodeService/RegisterNode`.
    RegisterNode,
    /// `sms.NodeService/Heartbeat`.
    Heartbeat,
    /// `sms.NodeService/DeleteNode`.
    DeleteNode,
    /// `sms.TaskService/RegisterTask`.
    RegisterTask,
    /// `sms.TaskService/GetTask`.
    GetTask,
    /// `sms.TaskService/ListTasks`.
    ListTasks,
    /// `sms.TaskService/UnregisterTask`.
    UnregisterTask,
    /// `POST /api/v1/files` on the SMS's HTTP port.
    UploadFile,
    /// `sms.ExecutionRegistryService/ReportExecution`.
    ReportExecution,
    /// `sms.InstanceRegistryService/ReportInstance`.
    ReportInstance,
}

impl SmsCall {
    /// Every call, in a fixed order (the counters' index).
    pub const ALL: [SmsCall; 10] = [
        SmsCall::RegisterNode,
        SmsCall::Heartbeat,
        SmsCall::DeleteNode,
        SmsCall::RegisterTask,
        SmsCall::GetTask,
        SmsCall::ListTasks,
        SmsCall::UnregisterTask,
        SmsCall::UploadFile,
        SmsCall::ReportExecution,
        SmsCall::ReportInstance,
    ];

    /// Its name, as in the SMS's API.
    pub const fn name(self) -> &'static str {
        match self {
            SmsCall::RegisterNode => "RegisterNode",
            SmsCall::Heartbeat => "Heartbeat",
            SmsCall::DeleteNode => "DeleteNode",
            SmsCall::RegisterTask => "RegisterTask",
            SmsCall::GetTask => "GetTask",
            SmsCall::ListTasks => "ListTasks",
            SmsCall::UnregisterTask => "UnregisterTask",
            SmsCall::UploadFile => "file upload",
            SmsCall::ReportExecution => "ReportExecution",
            SmsCall::ReportInstance => "ReportInstance",
        }
    }

    /// Its place in [`SmsCall::ALL`] (the counters' index).
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SmsCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
