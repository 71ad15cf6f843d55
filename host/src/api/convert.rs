//! Protobuf → domain: request validation (`docs/invocation-flow.md`, flow 1) and the
//! conversions of what requests carry. The replies are in `reply`.

use std::time::Duration;

use axum::http::HeaderName;
use spearlet_proto::spearlet as pb;

use super::value::from_any;
use crate::artifact::ArtifactSpec;
use crate::error::{Error, Result};
use crate::exec::{ExecutionMode, ExecutionStatus};
use crate::invoke::{InvokeRequest, Target};

fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidRequest {
        field,
        reason: reason.into(),
    }
}

/// Validates an `InvokeFunctionRequest` as `docs/invocation-flow.md` prescribes and turns it
/// into a domain request. `transport_timeout` is the gRPC deadline, if any;
/// the sooner of it and `context.timeout_ms` applies.
pub(super) fn invoke_request(
    mut req: pb::InvokeFunctionRequest,
    transport_timeout: Option<Duration>,
) -> Result<InvokeRequest> {
    let target = target(&mut req)?;
    if req.function_name.trim().is_empty() {
        return Err(invalid("function_name", "function_name is required"));
    }
    let mode = execution_mode(req.execution_mode)?;
    let params = parameters(req.parameters)?;
    let context = req.context.unwrap_or_default();
    let timeout = timeout(context.timeout_ms, transport_timeout)?;
    let max_retries = u32::try_from(context.max_retries)
        .map_err(|_| invalid("context.max_retries", "must not be negative"))?;
    Ok(InvokeRequest {
        target,
        function: req.function_name,
        params,
        mode,
        execution_id: execution_id(req.execution_id, context.execution_id)?,
        environment: sorted(context.environment),
        headers: sorted(context.headers),
        trace: None,
        tracestate: None,
        timeout,
        max_retries,
        force_new_instance: req.force_new_instance,
        metadata: req.invocation_metadata.into_iter().collect(),
    })
}

/// The task the request names, by its invocation type: the fields that
/// type requires are checked, and taken out of the request.
fn target(req: &mut pb::InvokeFunctionRequest) -> Result<Target> {
    let invocation =
        pb::InvocationType::try_from(req.invocation_type).unwrap_or(pb::InvocationType::Unknown);
    match invocation {
        pb::InvocationType::NewTask => {
            if req.task_name.trim().is_empty() {
                return Err(invalid("task_name", "task_name is required for new task creation"));
            }
            let Some(spec) = req.artifact_spec.take() else {
                return Err(invalid("artifact_spec", "artifact_spec is required for new task creation"));
            };
            Ok(Target::NewTask {
                name: std::mem::take(&mut req.task_name),
                description: std::mem::take(&mut req.task_description),
                artifact: artifact_spec(spec),
            })
        }
        pb::InvocationType::ExistingTask => {
            if req.task_id.trim().is_empty() {
                return Err(invalid("task_id", "task_id is required for existing task invocation"));
            }
            Ok(Target::ExistingTask {
                task_id: std::mem::take(&mut req.task_id),
                create_if_not_exists: req.create_if_not_exists,
                artifact: req.artifact_spec.take().map(artifact_spec),
                name: std::mem::take(&mut req.task_name),
                description: std::mem::take(&mut req.task_description),
            })
        }
        pb::InvocationType::Unknown => Err(invalid(
            "invocation_type",
            format!(
                "invocation_type {} is not valid: use INVOCATION_TYPE_NEW_TASK or INVOCATION_TYPE_EXISTING_TASK",
                req.invocation_type
            ),
        )),
    }
}

fn execution_mode(raw: i32) -> Result<ExecutionMode> {
    match pb::ExecutionMode::try_from(raw) {
        // Clients that leave the mode unset (proto3's 0) expect SYNC.
        Ok(pb::ExecutionMode::Sync | pb::ExecutionMode::Unknown) => Ok(ExecutionMode::Sync),
        Ok(pb::ExecutionMode::Async) => Ok(ExecutionMode::Async),
        Ok(pb::ExecutionMode::Stream) => Ok(ExecutionMode::Stream),
        _ => Err(invalid(
            "execution_mode",
            format!(
                "execution_mode {raw} is not supported: use EXECUTION_MODE_SYNC, _ASYNC or _STREAM"
            ),
        )),
    }
}

/// The sooner of `context.timeout_ms` (0: none) and the gRPC deadline.
fn timeout(context_ms: i64, transport: Option<Duration>) -> Result<Option<Duration>> {
    if context_ms < 0 {
        return Err(invalid("context.timeout_ms", "must not be negative"));
    }
    let context = (context_ms > 0).then(|| Duration::from_millis(context_ms.unsigned_abs()));
    Ok(match (context, transport) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// The execution id, from the request or its context (both may carry
/// it, and must then agree).
fn execution_id(top: Option<String>, context: String) -> Result<Option<String>> {
    match (top.filter(|s| !s.is_empty()), non_empty(context)) {
        (Some(a), Some(b)) if a != b => Err(invalid(
            "execution_id",
            format!("execution_id `{a}` and context.execution_id `{b}` differ"),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.trim().is_empty()).then_some(s)
}

fn sorted(map: std::collections::HashMap<String, String>) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = map.into_iter().collect();
    pairs.sort();
    pairs
}

fn parameters(params: Vec<pb::FunctionParameter>) -> Result<Vec<(String, crate::Value)>> {
    let mut out: Vec<(String, crate::Value)> = Vec::with_capacity(params.len());
    for (i, p) in params.into_iter().enumerate() {
        if p.name.trim().is_empty() {
            return Err(invalid("parameters", format!("parameter #{i} has no name")));
        }
        if out.iter().any(|(n, _)| *n == p.name) {
            return Err(invalid(
                "parameters",
                format!("parameter `{}` is given twice", p.name),
            ));
        }
        match p.value {
            Some(any) => {
                let value = from_any(&p.name, any)?;
                out.push((p.name, value));
            }
            None if p.required => return Err(Error::MissingParameter { name: p.name }),
            None => {}
        }
    }
    Ok(out)
}

pub(super) fn artifact_spec(spec: pb::ArtifactSpec) -> ArtifactSpec {
    ArtifactSpec {
        artifact_id: spec.artifact_id,
        artifact_type: spec.artifact_type,
        location: spec.location,
        version: spec.version,
        checksum: spec.checksum,
        metadata: spec.metadata.into_iter().collect(),
    }
}

pub(super) fn status_filter(raw: i32) -> Result<Option<ExecutionStatus>> {
    Ok(match pb::ExecutionStatus::try_from(raw) {
        Ok(pb::ExecutionStatus::Unknown) => None,
        Ok(pb::ExecutionStatus::Pending) => Some(ExecutionStatus::Pending),
        Ok(pb::ExecutionStatus::Running) => Some(ExecutionStatus::Running),
        Ok(pb::ExecutionStatus::Completed) => Some(ExecutionStatus::Completed),
        Ok(pb::ExecutionStatus::Failed) => Some(ExecutionStatus::Failed),
        Ok(pb::ExecutionStatus::Cancelled) => Some(ExecutionStatus::Cancelled),
        Ok(pb::ExecutionStatus::Timeout) => Some(ExecutionStatus::Timeout),
        Err(_) => {
            return Err(invalid(
                "status_filter",
                format!("{raw} is not an ExecutionStatus"),
            ))
        }
    })
}

/// Page sizes: 0 means the default, larger than the cap means the cap.
pub(super) fn page_limit(limit: i32) -> usize {
    match usize::try_from(limit) {
        Ok(0) | Err(_) => 100,
        Ok(n) => n.min(1000),
    }
}

/// The gRPC deadline from the `grpc-timeout` header (`<digits><unit>`).
/// The W3C trace a request belongs to: its `traceparent` (and
/// `tracestate`) metadata when valid, else a new trace.
/// The headers every call looks up, by names made once: looked up by
/// text, each name would be parsed and checked on every call.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

pub(super) fn trace_context(
    metadata: &tonic::metadata::MetadataMap,
) -> (crate::trace::TraceContext, Option<String>) {
    let text = |key: &HeaderName| metadata.as_ref().get(key).and_then(|v| v.to_str().ok());
    match text(&TRACEPARENT).and_then(crate::trace::TraceContext::parse) {
        // tracestate means nothing without the traceparent it goes with,
        // and is bounded by the spec (32 members, 512 characters).
        Some(trace) => (
            trace,
            text(&TRACESTATE)
                .filter(|s| s.len() <= 512)
                .map(str::to_owned),
        ),
        None => (crate::trace::TraceContext::start(), None),
    }
}

pub(super) fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let raw = metadata.as_ref().get(&GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_request() -> impl Strategy<Value = pb::InvokeFunctionRequest> {
        let text = || proptest::string::string_regex(".{0,24}").expect("a valid regex");
        let any_value = (
            prop_oneof![
                Just("type.googleapis.com/google.protobuf.StringValue".to_owned()),
                Just("type.googleapis.com/google.protobuf.Int64Value".to_owned()),
                Just("type.googleapis.com/google.protobuf.UInt64Value".to_owned()),
                Just("type.googleapis.com/google.protobuf.DoubleValue".to_owned()),
                Just("type.googleapis.com/google.protobuf.BoolValue".to_owned()),
                Just("type.googleapis.com/google.protobuf.BytesValue".to_owned()),
                Just("type.googleapis.com/google.protobuf.Nonsense".to_owned()),
                text(),
            ],
            proptest::collection::vec(any::<u8>(), 0..16),
        )
            .prop_map(|(type_url, value)| prost_types::Any { type_url, value });
        let parameter = (text(), proptest::option::of(any_value), any::<bool>()).prop_map(
            |(name, value, required)| pb::FunctionParameter {
                name,
                value,
                required,
                ..Default::default()
            },
        );
        let context = (any::<i64>(), any::<i32>(), text()).prop_map(
            |(timeout_ms, max_retries, execution_id)| pb::ExecutionContext {
                timeout_ms,
                max_retries,
                execution_id,
                ..Default::default()
            },
        );
        (
            (-2i32..5, text(), text(), text()),
            (
                proptest::collection::vec(parameter, 0..4),
                -2i32..5,
                proptest::option::of(context),
                proptest::option::of(text()),
                any::<bool>(),
                proptest::collection::hash_map(any_metadata_key(), any_metadata_value(), 0..4),
            ),
        )
            .prop_map(
                |(
                    (invocation_type, task_name, task_id, function_name),
                    (
                        parameters,
                        execution_mode,
                        context,
                        execution_id,
                        with_spec,
                        invocation_metadata,
                    ),
                )| pb::InvokeFunctionRequest {
                    invocation_type,
                    task_name,
                    task_id,
                    function_name,
                    parameters,
                    execution_mode,
                    context,
                    execution_id,
                    artifact_spec: with_spec.then(pb::ArtifactSpec::default),
                    invocation_metadata,
                    ..Default::default()
                },
            )
    }

    fn any_metadata_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(crate::invoke::POOL_MAX_KEY.to_owned()),
            Just(crate::invoke::POOL_MIN_KEY.to_owned()),
            Just(crate::invoke::MEMORY_MAX_KEY.to_owned()),
            Just(crate::isolate::ISOLATION_KEY.to_owned()),
            "spearlet\\.[a-z.]{0,10}",
            "[a-z]{1,6}",
        ]
    }

    fn any_metadata_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..16).prop_map(|n| n.to_string()),
            Just("process".to_owned()),
            ".{0,8}",
        ]
    }

    proptest! {
        /// Whatever a client sends, the adapter answers with a request or a
        /// clear error, and never panics.
        #[test]
        fn arbitrary_requests_never_panic(req in any_request(), grpc_ms in proptest::option::of(0u64..10_000)) {
            let config = crate::Config::default();
            let checked = super::super::limits::check_invoke(&req, &config.limits)
                .and_then(|()| invoke_request(req, grpc_ms.map(Duration::from_millis)))
                .and_then(|req| {
                    crate::invoke::metadata::check(&req.metadata, &config)?;
                    Ok(req)
                });
            match checked {
                Ok(req) => {
                    prop_assert!(req.max_retries <= config.limits.max_retries);
                    let limits = crate::invoke::metadata::pool_limits(&req.metadata, &config.pool).unwrap();
                    prop_assert!(limits.max <= config.pool.max_instances);
                }
                Err(e) => {
                    prop_assert_eq!(crate::api::status::code(&e), tonic::Code::InvalidArgument, "{}", e);
                    prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }

    #[test]
    fn grpc_timeouts_parse() {
        let mut m = tonic::metadata::MetadataMap::new();
        assert_eq!(grpc_timeout(&m), None);
        m.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_millis(250)));
        m.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&m), Some(Duration::from_secs(3)));
        m.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&m), None);
    }

    #[test]
    fn the_sooner_timeout_wins_and_ids_must_agree() {
        let base = pb::InvokeFunctionRequest {
            invocation_type: pb::InvocationType::ExistingTask.into(),
            task_id: "t".into(),
            function_name: "f".into(),
            execution_mode: pb::ExecutionMode::Sync.into(),
            context: Some(pb::ExecutionContext {
                timeout_ms: 5000,
                execution_id: "a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let req = invoke_request(base.clone(), Some(Duration::from_millis(100))).unwrap();
        assert_eq!(req.timeout, Some(Duration::from_millis(100)));
        assert_eq!(req.execution_id.as_deref(), Some("a"));
        let clash = pb::InvokeFunctionRequest {
            execution_id: Some("b".into()),
            ..base
        };
        assert!(matches!(
            invoke_request(clash, None),
            Err(Error::InvalidRequest {
                field: "execution_id",
                ..
            })
        ));
    }
}
