//! `spearlet invoke`: build an InvokeFunctionRequest from flags, print the outcome.

use anyhow::{bail, Context as _};
use clap::Args;
use prost::Message;
use spearlet_proto::spearlet as pb;

use super::declared::{declared, Declared};
use super::present::WRAPPER;
use super::reply::Shown;
use super::{connect, runtime, ClientOptions};

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function to call.
    pub(super) function: String,

    /// Parameters: `name=value`, typed as the function declares it (a name
    /// it does not declare, or a function the server cannot describe: the
    /// type is inferred from the value — integer, float, true/false, else
    /// string), or
    /// `name:type=value` with type one of str, i64, f64, bool, bytes
    /// (`@FILE` reads the bytes from a file).
    #[arg(short = 'p', long = "param", value_name = "NAME[:TYPE]=VALUE")]
    params: Vec<String>,

    /// Run on the task with this name, creating it from --artifact if it
    /// does not exist (NEW_TASK).
    #[arg(long, conflicts_with = "task_id")]
    pub(super) task_name: Option<String>,

    /// Run on the task with this id (EXISTING_TASK).
    #[arg(long)]
    pub(super) task_id: Option<String>,

    /// With --task-id: create the task under that id if it does not exist.
    #[arg(long, requires = "task_id")]
    create: bool,

    /// The plugin: a file path (made absolute) or an http(s):// URL.
    #[arg(long, value_name = "PATH|URL")]
    pub(super) artifact: Option<String>,

    /// The artifact's sha256 (required for URLs).
    #[arg(long, value_name = "SHA256")]
    checksum: Option<String>,

    /// Return at once with an execution id (ASYNC).
    #[arg(long = "async", conflicts_with = "stream")]
    run_async: bool,

    /// Print the chunks the function emits as they arrive (StreamFunction).
    #[arg(long)]
    stream: bool,

    /// Time allowed for the execution, in milliseconds.
    #[arg(long, value_name = "MS")]
    timeout: Option<u64>,

    /// Attempts after the first, for retriable failures.
    #[arg(long, default_value_t = 0)]
    retries: u32,

    /// Run on a new instance rather than a pooled one.
    #[arg(long)]
    fresh: bool,

    /// Name the execution (a repeated id returns the first run's state).
    #[arg(long)]
    execution_id: Option<String>,

    /// Environment for the call, `KEY=VALUE`; repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    environment: Vec<String>,

    /// Invocation metadata, `KEY=VALUE`; repeatable. When the call creates
    /// its task, this becomes the instances' configuration.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    metadata: Vec<String>,

    /// Join this W3C trace (`00-<trace id>-<span id>-<flags>`), e.g. the
    /// caller's; without it the server starts a new trace. The trace id is
    /// shown either way, and the plugin reads it as `ctx.trace_id()`.
    #[arg(long, value_name = "TRACEPARENT")]
    traceparent: Option<String>,

    /// With --task-name and --artifact: if the task exists but runs another
    /// version of the plugin (the file was rebuilt, or another checksum),
    /// switch the task to this one first (blue/green) instead of refusing.
    #[arg(long, requires = "artifact")]
    upgrade: bool,

    /// Where the plugin code of the task this call creates runs:
    /// `in-process`, or `process` (worker processes: a crash costs a
    /// worker, not the server). Without it, the server's default. Only when
    /// the call creates its task (--task-name, or --task-id with --create):
    /// a task's tier never changes.
    #[arg(long, value_name = "TIER", value_parser = crate::cli::isolation_parser())]
    isolation: Option<spearlet::isolate::Isolation>,

    /// The memory cap, in bytes, of each worker process of the task this
    /// call creates (process tier only; at most 1 TiB). Only when the call
    /// creates its task, as --isolation.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..=spearlet::invoke::MEMORY_MAX_LIMIT))]
    memory_max: Option<u64>,

    /// Resolve the task, verify and load the artifact, resolve the
    /// function and check the parameters against its signature — and run
    /// nothing; no task is created.
    #[arg(long)]
    dry_run: bool,

    /// Write the result, raw, to FILE: bytes as they are, a string as
    /// UTF-8, a number or bool as JSON; a stream's chunks one after
    /// another. The summary still prints.
    #[arg(long, value_name = "FILE")]
    output: Option<std::path::PathBuf>,

    #[command(flatten)]
    client: ClientOptions,
}

/// Refuses flags that only a task's creation reads on a call that cannot
/// create its task: the server would ignore them, and the user would
/// believe the task runs as asked.
fn check_creation_flags(args: &InvokeArgs) -> anyhow::Result<()> {
    if args.task_id.is_none() || args.create {
        return Ok(());
    }
    for (set, flag) in [
        (args.isolation.is_some(), "--isolation"),
        (args.memory_max.is_some(), "--memory-max"),
    ] {
        if set {
            bail!(
                "{flag} applies only when the task is created (--task-name, or --task-id with \
                 --create); an existing task keeps the tier it was created with"
            );
        }
    }
    Ok(())
}

pub fn invoke(args: &InvokeArgs) -> anyhow::Result<std::process::ExitCode> {
    check_creation_flags(args)?;
    let shown = Shown {
        json: args.client.json(),
        output: args.output.as_deref(),
    };
    runtime()?.block_on(async {
        let mut client = connect(&args.client.endpoint).await?;
        let declared = declared(&mut client, args).await;
        let mut request = tonic::Request::new(build_request(args, declared.as_ref())?);
        if let Some(traceparent) = &args.traceparent {
            request.metadata_mut().insert(
                "traceparent",
                traceparent
                    .parse()
                    .context("--traceparent must be printable ASCII")?,
            );
        }
        // A stream function streams, whether or not --stream was given.
        if !args.dry_run && (args.stream || declared.as_ref().is_some_and(|d| d.stream)) {
            return shown.stream(&mut client, request).await;
        }
        shown.unary(&mut client, request).await
    })
}

/// An artifact as the server needs it: URLs as they are, a file path made
/// absolute (the server does not share the client's working directory).
pub(super) fn artifact_location(a: &str) -> anyhow::Result<String> {
    Ok(if a.contains("://") || a.starts_with('/') {
        a.to_owned()
    } else {
        std::fs::canonicalize(a)
            .with_context(|| format!("artifact {a}"))?
            .to_string_lossy()
            .into_owned()
    })
}

pub(super) fn build_request(
    args: &InvokeArgs,
    declared: Option<&Declared>,
) -> anyhow::Result<pb::InvokeFunctionRequest> {
    let artifact_spec = args
        .artifact
        .as_deref()
        .map(|a| -> anyhow::Result<pb::ArtifactSpec> {
            Ok(pb::ArtifactSpec {
                location: artifact_location(a)?,
                artifact_type: "native".to_owned(),
                checksum: args.checksum.clone().unwrap_or_default(),
                ..Default::default()
            })
        })
        .transpose()?;
    let (invocation_type, task_name, task_id) = match (&args.task_name, &args.task_id) {
        (Some(name), None) => (pb::InvocationType::NewTask, name.clone(), String::new()),
        (None, Some(id)) => (pb::InvocationType::ExistingTask, String::new(), id.clone()),
        (None, None) => bail!("name the task: --task-name NAME (with --artifact) or --task-id ID"),
        (Some(_), Some(_)) => unreachable!("clap rejects --task-name with --task-id"),
    };
    let mode = if args.stream {
        pb::ExecutionMode::Stream
    } else if args.run_async {
        pb::ExecutionMode::Async
    } else {
        pb::ExecutionMode::Sync
    };
    Ok(pb::InvokeFunctionRequest {
        invocation_type: invocation_type.into(),
        task_name,
        task_id,
        artifact_spec,
        function_name: args.function.clone(),
        parameters: args
            .params
            .iter()
            .map(|p| parse_param(p, declared))
            .collect::<anyhow::Result<_>>()?,
        execution_mode: mode.into(),
        context: Some(pb::ExecutionContext {
            timeout_ms: args
                .timeout
                .map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)),
            max_retries: i32::try_from(args.retries).unwrap_or(i32::MAX),
            environment: pairs(&args.environment, "--env")?,
            ..Default::default()
        }),
        create_if_not_exists: args.create,
        force_new_instance: args.fresh,
        invocation_metadata: {
            let mut metadata = pairs(&args.metadata, "--meta")?;
            if args.upgrade {
                metadata.insert(spearlet::invoke::UPGRADE_KEY.to_owned(), "true".to_owned());
            }
            if args.dry_run {
                metadata.insert(spearlet::DRY_RUN_KEY.to_owned(), "true".to_owned());
            }
            if let Some(tier) = args.isolation {
                metadata.insert(
                    spearlet::isolate::ISOLATION_KEY.to_owned(),
                    tier.to_string(),
                );
            }
            if let Some(bytes) = args.memory_max {
                metadata.insert(
                    spearlet::invoke::MEMORY_MAX_KEY.to_owned(),
                    bytes.to_string(),
                );
            }
            metadata
        },
        execution_id: args.execution_id.clone(),
        ..Default::default()
    })
}

fn pairs(raw: &[String], flag: &str) -> anyhow::Result<std::collections::HashMap<String, String>> {
    raw.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{flag} takes KEY=VALUE, got `{kv}`"))
        })
        .collect()
}

/// `name=value` or `name:type=value` as a typed parameter.
fn parse_param(raw: &str, declared: Option<&Declared>) -> anyhow::Result<pb::FunctionParameter> {
    use spearlet::signature::ParamKind;
    let (key, value) = raw
        .split_once('=')
        .with_context(|| format!("-p takes NAME=VALUE or NAME:TYPE=VALUE, got `{raw}`"))?;
    let (name, ty) = match key.split_once(':') {
        Some((name, ty)) => (name, Some(ty)),
        // Untyped: the declared type, when the server told it.
        None => (
            key,
            declared
                .and_then(|d| d.params.get(key))
                .and_then(|kind| match kind {
                    ParamKind::Integer => Some("i64"),
                    ParamKind::Float => Some("f64"),
                    ParamKind::Bool => Some("bool"),
                    ParamKind::Text => Some("str"),
                    ParamKind::Bytes => Some("bytes"),
                    ParamKind::Other => None,
                }),
        ),
    };
    let bad = |ty: &str| anyhow::anyhow!("parameter `{name}`: `{value}` is not a valid {ty}");
    let (kind, bytes) = match ty {
        Some("str" | "string") => ("StringValue", value.to_owned().encode_to_vec()),
        Some("i64" | "int") => (
            "Int64Value",
            value
                .parse::<i64>()
                .map_err(|_| bad("i64"))?
                .encode_to_vec(),
        ),
        Some("f64" | "float") => (
            "DoubleValue",
            value
                .parse::<f64>()
                .map_err(|_| bad("f64"))?
                .encode_to_vec(),
        ),
        Some("bool") => (
            "BoolValue",
            value
                .parse::<bool>()
                .map_err(|_| bad("bool"))?
                .encode_to_vec(),
        ),
        Some("bytes") => {
            let data = match value.strip_prefix('@') {
                Some(path) => {
                    std::fs::read(path).with_context(|| format!("parameter `{name}`: {path}"))?
                }
                None => value.as_bytes().to_vec(),
            };
            ("BytesValue", data.encode_to_vec())
        }
        Some(other) => {
            bail!("parameter `{name}`: unknown type `{other}` (use str, i64, f64, bool or bytes)")
        }
        None => {
            if let Ok(i) = value.parse::<i64>() {
                ("Int64Value", i.encode_to_vec())
            } else if let Ok(f) = value.parse::<f64>() {
                ("DoubleValue", f.encode_to_vec())
            } else if let Ok(b) = value.parse::<bool>() {
                ("BoolValue", b.encode_to_vec())
            } else {
                ("StringValue", value.to_owned().encode_to_vec())
            }
        }
    };
    Ok(pb::FunctionParameter {
        name: name.to_owned(),
        value: Some(prost_types::Any {
            type_url: format!("{WRAPPER}{kind}"),
            value: bytes,
        }),
        required: true,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_typed_by_inference_or_annotation() {
        let url = |raw: &str| parse_param(raw, None).unwrap().value.unwrap().type_url;
        assert!(url("a=5").ends_with("Int64Value"));
        assert!(url("a=2.5").ends_with("DoubleValue"));
        assert!(url("a=true").ends_with("BoolValue"));
        assert!(url("a=hello").ends_with("StringValue"));
        assert!(url("a:str=5").ends_with("StringValue"));
        assert!(url("a:bytes=xyz").ends_with("BytesValue"));
        assert!(parse_param("a:i64=x", None).is_err());
        assert!(parse_param("novalue", None).is_err());
        assert!(parse_param("a:weird=1", None).is_err());
    }

    #[test]
    fn declared_types_win_over_inference_but_not_over_annotation() {
        use spearlet::signature::ParamKind;
        let declared = Declared {
            params: [
                ("text".to_owned(), ParamKind::Text),
                ("n".to_owned(), ParamKind::Float),
            ]
            .into_iter()
            .collect(),
            stream: false,
        };
        let url = |raw: &str| {
            parse_param(raw, Some(&declared))
                .unwrap()
                .value
                .unwrap()
                .type_url
        };
        assert!(url("text=42").ends_with("StringValue"));
        assert!(url("n=2").ends_with("DoubleValue"));
        assert!(
            url("text:i64=42").ends_with("Int64Value"),
            "an annotation is the author's word"
        );
        assert!(
            url("other=42").ends_with("Int64Value"),
            "undeclared: inferred"
        );
    }
}
