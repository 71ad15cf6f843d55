//! `spearlet.admin.v1.AdminService`: our own operations on tasks, beside
//! the SPEAR-compatible `FunctionService`.

use std::time::Duration;

use spearlet_proto::spearlet::admin::v1 as admin;
use spearlet_proto::spearlet::admin::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::{convert, limits, reply};
use crate::error::Error;
use crate::host::{Host, Switched};

/// The admin service over a [`Host`].
#[derive(Debug, Clone)]
pub struct AdminApi {
    host: Host,
}

impl AdminApi {
    /// The service for `host`.
    pub fn new(host: Host) -> Self {
        AdminApi { host }
    }
}

/// A drain timeout from the wire: 0 means `tasks.drain_timeout`; at most
/// `tasks.max_drain_timeout`, so a request cannot hold a switch's caller,
/// and the old version's pool, for as long as it likes.
fn drain_timeout(ms: i64, tasks: &crate::config::TasksConfig) -> Result<Duration, Error> {
    let max = tasks.max_drain_timeout;
    let invalid = |reason: String| Error::InvalidRequest {
        field: "drain_timeout_ms",
        reason,
    };
    match u64::try_from(ms) {
        Ok(0) => Ok(tasks.drain_timeout),
        Ok(ms) if Duration::from_millis(ms) <= max => Ok(Duration::from_millis(ms)),
        Ok(ms) => Err(invalid(format!(
            "drain_timeout_ms = {ms} is above the limit, {} ms (tasks.max_drain_timeout)",
            max.as_millis()
        ))),
        Err(_) => Err(invalid(format!("must not be negative, got {ms}"))),
    }
}

fn task_switch(s: Switched) -> admin::TaskSwitch {
    let version =
        |(digest, plugin_version, location): (String, String, String)| admin::TaskVersion {
            digest,
            plugin_version,
            location,
        };
    admin::TaskSwitch {
        task_id: s.task_id.to_string(),
        current: Some(version(s.current)),
        previous: s.previous.map(version),
        switched_at: Some(reply::timestamp(s.at)),
        removed_functions: s.removed,
        still_running: i32::try_from(s.still_running).unwrap_or(i32::MAX),
        unchanged: s.unchanged,
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn upgrade_task(
        &self,
        request: Request<admin::UpgradeTaskRequest>,
    ) -> Result<Response<admin::TaskSwitch>, Status> {
        let req = request.into_inner();
        limits::check_id("task_id", &req.task_id, &self.host.config().limits)?;
        let spec = req.artifact_spec.ok_or(Error::InvalidRequest {
            field: "artifact_spec",
            reason: "an upgrade needs the new version's artifact_spec".to_owned(),
        })?;
        let drain = drain_timeout(req.drain_timeout_ms, &self.host.config().tasks)?;
        let switched = self
            .host
            .upgrade_task(
                &req.task_id,
                &convert::artifact_spec(spec),
                drain,
                req.allow_removed,
            )
            .await?;
        Ok(Response::new(task_switch(switched)))
    }

    async fn rollback_task(
        &self,
        request: Request<admin::RollbackTaskRequest>,
    ) -> Result<Response<admin::TaskSwitch>, Status> {
        let req = request.into_inner();
        limits::check_id("task_id", &req.task_id, &self.host.config().limits)?;
        let drain = drain_timeout(req.drain_timeout_ms, &self.host.config().tasks)?;
        let switched = self.host.rollback_task(&req.task_id, drain).await?;
        Ok(Response::new(task_switch(switched)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_timeouts_default_from_the_config_and_are_bounded() {
        let tasks = crate::config::TasksConfig::default();
        assert_eq!(drain_timeout(0, &tasks).unwrap(), tasks.drain_timeout);
        assert_eq!(
            drain_timeout(1500, &tasks).unwrap(),
            Duration::from_millis(1500)
        );
        let max = i64::try_from(tasks.max_drain_timeout.as_millis()).unwrap();
        assert_eq!(drain_timeout(max, &tasks).unwrap(), tasks.max_drain_timeout);
        for (ms, shown) in [
            (max + 1, "tasks.max_drain_timeout"),
            (i64::MAX, "tasks.max_drain_timeout"),
            (-1, "negative"),
        ] {
            let err = drain_timeout(ms, &tasks).unwrap_err().to_string();
            assert!(
                err.contains("drain_timeout_ms") && err.contains(shown),
                "{err}"
            );
        }
    }
}
