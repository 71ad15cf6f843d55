//! Bounds on what one request may carry, checked on the wire message before
//! anything is converted, so an oversized request costs no more than its
//! decoding. Each refusal names the field and the configuration key.

use spearlet_proto::spearlet as pb;

use crate::config::LimitsConfig;
use crate::error::{Error, Result};

fn over(field: &'static str, what: &str, size: usize, limit: usize, key: &str) -> Error {
    Error::InvalidRequest {
        field,
        reason: format!("{what} is {size}; the limit is {limit} (limits.{key})"),
    }
}

fn bytes(field: &'static str, value: &str, limit: usize, key: &str) -> Result<()> {
    if value.len() > limit {
        return Err(over(
            field,
            &format!("{field} (bytes)"),
            value.len(),
            limit,
            key,
        ));
    }
    Ok(())
}

fn entries(field: &'static str, n: usize, limit: usize, key: &str) -> Result<()> {
    if n > limit {
        return Err(over(
            field,
            &format!("the number of {field} entries"),
            n,
            limit,
            key,
        ));
    }
    Ok(())
}

/// Checks an `InvokeFunctionRequest` against `limits`.
///
/// # Errors
///
/// [`Error::InvalidRequest`] naming the first limit exceeded.
pub(super) fn check_invoke(req: &pb::InvokeFunctionRequest, limits: &LimitsConfig) -> Result<()> {
    check_invoke_names(req, limits)?;
    check_parameters(&req.parameters, limits)?;
    entries(
        "invocation_metadata",
        req.invocation_metadata.len(),
        limits.max_metadata_entries,
        "max_metadata_entries",
    )?;
    if let Some(spec) = &req.artifact_spec {
        check_artifact_spec(spec, limits)?;
    }
    if let Some(context) = &req.context {
        check_context(context, limits)?;
    }
    Ok(())
}

/// The names and ids an invocation carries: task, description, ids and
/// function name.
fn check_invoke_names(req: &pb::InvokeFunctionRequest, limits: &LimitsConfig) -> Result<()> {
    bytes(
        "task_name",
        &req.task_name,
        limits.max_name_bytes,
        "max_name_bytes",
    )?;
    bytes(
        "task_description",
        &req.task_description,
        limits.max_description_bytes,
        "max_description_bytes",
    )?;
    bytes("task_id", &req.task_id, limits.max_id_bytes, "max_id_bytes")?;
    if let Some(id) = &req.execution_id {
        bytes("execution_id", id, limits.max_id_bytes, "max_id_bytes")?;
    }
    bytes(
        "function_name",
        &req.function_name,
        limits.max_function_name_bytes,
        "max_function_name_bytes",
    )
}

/// The parameters: how many, each name's length, and their values' total
/// size.
fn check_parameters(parameters: &[pb::FunctionParameter], limits: &LimitsConfig) -> Result<()> {
    if parameters.len() > limits.max_parameters {
        return Err(over(
            "parameters",
            "the number of parameters",
            parameters.len(),
            limits.max_parameters,
            "max_parameters",
        ));
    }
    let mut total = 0usize;
    for p in parameters {
        bytes(
            "parameters",
            &p.name,
            limits.max_function_name_bytes,
            "max_function_name_bytes",
        )?;
        total = total.saturating_add(p.value.as_ref().map_or(0, |v| v.value.len()));
    }
    if total > limits.max_parameter_bytes {
        return Err(over(
            "parameters",
            "the parameters' total size (bytes)",
            total,
            limits.max_parameter_bytes,
            "max_parameter_bytes",
        ));
    }
    Ok(())
}

/// The artifact a new task is to be made from.
fn check_artifact_spec(spec: &pb::ArtifactSpec, limits: &LimitsConfig) -> Result<()> {
    bytes(
        "artifact_spec.artifact_id",
        &spec.artifact_id,
        limits.max_id_bytes,
        "max_id_bytes",
    )?;
    entries(
        "artifact_spec.metadata",
        spec.metadata.len(),
        limits.max_metadata_entries,
        "max_metadata_entries",
    )
}

/// The execution context: retries, its execution id, environment and
/// headers.
fn check_context(context: &pb::ExecutionContext, limits: &LimitsConfig) -> Result<()> {
    if usize::try_from(context.max_retries).is_ok_and(|n| n > limits.max_retries as usize) {
        return Err(over(
            "context.max_retries",
            "context.max_retries",
            usize::try_from(context.max_retries).unwrap_or(usize::MAX),
            limits.max_retries as usize,
            "max_retries",
        ));
    }
    bytes(
        "context.execution_id",
        &context.execution_id,
        limits.max_id_bytes,
        "max_id_bytes",
    )?;
    entries(
        "context.environment",
        context.environment.len(),
        limits.max_environment_entries,
        "max_environment_entries",
    )?;
    entries(
        "context.headers",
        context.headers.len(),
        limits.max_environment_entries,
        "max_environment_entries",
    )
}

/// Checks a `spearlet.InvocationService/Invoke` request (today's SPEAR
/// node API) against `limits`.
///
/// # Errors
///
/// [`Error::InvalidRequest`] naming the first limit exceeded.
pub(super) fn check_node_invoke(
    req: &spearlet_proto::node::InvokeRequest,
    limits: &LimitsConfig,
) -> Result<()> {
    for (field, id) in [
        ("task_id", &req.task_id),
        ("execution_id", &req.execution_id),
        ("invocation_id", &req.invocation_id),
        ("session_id", &req.session_id),
    ] {
        bytes(field, id, limits.max_id_bytes, "max_id_bytes")?;
    }
    bytes(
        "function_name",
        &req.function_name,
        limits.max_function_name_bytes,
        "max_function_name_bytes",
    )?;
    let input = req.input.as_ref().map_or(0, |p| p.data.len());
    if input > limits.max_parameter_bytes {
        return Err(over(
            "input",
            "the input's size (bytes)",
            input,
            limits.max_parameter_bytes,
            "max_parameter_bytes",
        ));
    }
    entries(
        "metadata",
        req.metadata.len(),
        limits.max_metadata_entries,
        "max_metadata_entries",
    )?;
    entries(
        "environment",
        req.environment.len(),
        limits.max_environment_entries,
        "max_environment_entries",
    )?;
    entries(
        "headers",
        req.headers.len(),
        limits.max_environment_entries,
        "max_environment_entries",
    )
}

/// Checks an id given to a lookup RPC (status, cancel, task).
///
/// # Errors
///
/// [`Error::InvalidRequest`] when it is over `limits.max_id_bytes`.
pub(super) fn check_id(field: &'static str, id: &str, limits: &LimitsConfig) -> Result<()> {
    bytes(field, id, limits.max_id_bytes, "max_id_bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_is_named_when_exceeded() {
        let limits = LimitsConfig::default();
        let base = pb::InvokeFunctionRequest {
            task_name: "ok".into(),
            function_name: "f".into(),
            ..Default::default()
        };
        assert!(check_invoke(&base, &limits).is_ok());
        let long_name = pb::InvokeFunctionRequest {
            task_name: "n".repeat(100_000),
            ..base.clone()
        };
        let err = check_invoke(&long_name, &limits).unwrap_err().to_string();
        assert!(
            err.contains("limits.max_name_bytes") && err.contains("100000"),
            "{err}"
        );
        let many = pb::InvokeFunctionRequest {
            parameters: (0..300)
                .map(|i| pb::FunctionParameter {
                    name: format!("p{i}"),
                    ..Default::default()
                })
                .collect(),
            ..base.clone()
        };
        let err = check_invoke(&many, &limits).unwrap_err().to_string();
        assert!(err.contains("limits.max_parameters"), "{err}");
        let big = pb::InvokeFunctionRequest {
            parameters: vec![pb::FunctionParameter {
                name: "blob".into(),
                value: Some(prost_types::Any {
                    type_url: String::new(),
                    value: vec![0; 5 << 20],
                }),
                ..Default::default()
            }],
            ..base.clone()
        };
        let err = check_invoke(&big, &limits).unwrap_err().to_string();
        assert!(err.contains("limits.max_parameter_bytes"), "{err}");
        let env = pb::InvokeFunctionRequest {
            context: Some(pb::ExecutionContext {
                environment: (0..300).map(|i| (format!("K{i}"), String::new())).collect(),
                ..Default::default()
            }),
            ..base
        };
        let err = check_invoke(&env, &limits).unwrap_err().to_string();
        assert!(err.contains("limits.max_environment_entries"), "{err}");
    }
}
