//! The task handlers of `FunctionService` (list, get, delete): they
//! answer from the task registry and the tasks recorded before a
//! restart, and change together when what a task is changes.

use tonic::{Request, Response, Status};

use super::{convert, limits, pb, reply, FunctionApi};

impl FunctionApi {
    /// `ListTasks`: one page of the tasks, loaded or recorded, in name
    /// order.
    pub(super) async fn task_page(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let start_after = (!req.start_after.is_empty()).then_some(req.start_after.as_str());
        let limit = convert::page_limit(req.limit);
        let (tasks, mut has_more) = self.host.tasks().list(&req.prefix, start_after, limit);
        let mut page: Vec<pb::TaskInfo> = tasks.iter().map(|t| reply::task_info(t)).collect();
        // Tasks recorded before a restart and not loaded yet belong in the
        // list too, in name order with the others.
        page.extend(
            self.host
                .dormant_tasks()
                .iter()
                .filter(|t| t.name.starts_with(&req.prefix))
                .filter(|t| start_after.is_none_or(|after| t.name.as_str() > after))
                .map(reply::dormant_task_info),
        );
        page.sort_by(|a, b| a.task_name.cmp(&b.task_name));
        if page.len() > limit.max(1) {
            page.truncate(limit.max(1));
            has_more = true;
        }
        Ok(Response::new(pb::ListTasksResponse {
            next_start_after: if has_more {
                page.last().map(|t| t.task_name.clone()).unwrap_or_default()
            } else {
                String::new()
            },
            tasks: page,
            has_more,
        }))
    }

    /// `GetTask`: one task, woken if recorded before a restart, and its
    /// recent executions if asked.
    pub(super) async fn task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let req = request.into_inner();
        limits::check_id("task_id", &req.task_id, &self.host.config().limits)?;
        let task = match self.host.task(&req.task_id) {
            Some(task) => Some(task),
            // Recorded before a restart: asking about it is a first use.
            None => match self.host.dormant_task(&req.task_id, false) {
                Some(stored) => Some(self.host.wake(stored).await?),
                None => None,
            },
        };
        let Some(task) = task else {
            return Ok(Response::new(pb::GetTaskResponse {
                found: false,
                task: None,
                executions: Vec::new(),
                message: format!("task `{}` not found", req.task_id),
            }));
        };
        let executions = if req.include_executions {
            let limit = match usize::try_from(req.execution_limit) {
                Ok(0) | Err(_) => 10,
                Ok(n) => n.min(1000),
            };
            self.host
                .recent_executions(&task.id, limit)
                .iter()
                .map(reply::execution_info)
                .collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::GetTaskResponse {
            found: true,
            task: Some(reply::task_info(&task)),
            executions,
            message: String::new(),
        }))
    }

    /// `DeleteTask`: removes one task, and withdraws it from the SMS.
    pub(super) async fn remove_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteTaskResponse>, Status> {
        let req = request.into_inner();
        limits::check_id("task_id", &req.task_id, &self.host.config().limits)?;
        let deleted = self
            .host
            .remove_task(&req.task_id, req.force, req.cleanup_executions)
            .await?;
        let mut message = "deleted".to_owned();
        if deleted.cancelled_running > 0 {
            message.push_str(&format!(
                "; {} running execution(s) asked to stop",
                deleted.cancelled_running
            ));
        }
        // The local delete stands whatever the SMS says; the reply tells.
        if let Some(cluster) = self.host.withdraw_deleted(&deleted.membership).await {
            message.push_str("; ");
            message.push_str(&cluster);
        }
        Ok(Response::new(pb::DeleteTaskResponse {
            success: true,
            message,
            deleted: true,
            cleaned_executions: i32::try_from(deleted.cleaned_executions).unwrap_or(i32::MAX),
        }))
    }
}
