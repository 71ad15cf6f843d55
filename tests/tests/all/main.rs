//! One integration-test binary, one module per area (see STYLE.md).

mod abi_conformance;
mod artifacts;
mod cluster;
mod devloop;
mod durable;
mod endings;
mod execution;
mod fake_sms;
mod function_service;
mod grpc_util;
mod helpers;
mod hostile;
mod isolated_tasks;
mod isolation;
mod isolation_setting;
mod limits;
mod loader;
mod node_api;
mod observability;
mod pools;
mod samples;
mod streaming;
mod task_management;
mod tier;
mod unknown_params;
mod upgrade;
