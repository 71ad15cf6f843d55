//! Round trips of every message, and garbage that must decode as
//! `Malformed`, never panic.

use super::*;

fn values() -> Vec<Value> {
    vec![
        Value::Unit,
        Value::String("héllo".into()),
        Value::I64(-42),
        Value::F64(1.5),
        Value::Bool(true),
        Value::Bytes(vec![0, 1, 255]),
        Value::Raw {
            type_url: "type.googleapis.com/x.Y".into(),
            bytes: vec![9],
        },
    ]
}

#[test]
fn every_message_round_trips() {
    let to_worker = [
        ToWorker::Load {
            source: "/proc/1/fd/3".into(),
            digest: [7; 32],
            config: vec![("k".into(), "v".into())],
            memory_max: 1 << 20,
            mode: LoadMode::Instance,
        },
        ToWorker::Call(CallMessage {
            function: 3,
            execution_id: "e".into(),
            params: values()
                .into_iter()
                .enumerate()
                .map(|(i, v)| (format!("p{i}"), v))
                .collect(),
            environment: vec![("A".into(), "1".into())],
            headers: vec![],
            deadline_unix_nanos: 99,
        }),
        ToWorker::Ack { accepted: true },
    ];
    for m in to_worker {
        assert_eq!(ToWorker::decode(&m.encode()), Ok(m));
    }
    let mut to_host = vec![
        ToHost::Ready,
        ToHost::Probed,
        ToHost::Loaded(Description {
            name: "echo".into(),
            version: "0.1.0".into(),
            sdk_version: "0.1.0".into(),
            abi_version: "1.1.0".into(),
            root_fields: 9,
            functions: vec![FunctionInfo {
                name: "echo".into(),
                kind: FunctionKind::Stream,
                description: "d".into(),
                signature: "(input: str) -> str".into(),
                blocking: true,
            }],
            default_function: Some(0),
        }),
        ToHost::Refused {
            kind: "no_root_module".into(),
            message: "m".into(),
        },
        ToHost::InstanceRefused {
            code: "c".into(),
            message: "m".into(),
        },
        ToHost::Log(LogLevel::Warn, "line".into()),
        ToHost::Done {
            end: CallEnd::Failed {
                code: "c".into(),
                message: "m".into(),
                retriable: true,
            },
            memory: Some((1, 2)),
        },
        ToHost::Done {
            end: CallEnd::Panicked {
                message: "boom".into(),
            },
            memory: None,
        },
    ];
    to_host.extend(values().into_iter().map(ToHost::Chunk));
    to_host.extend(values().into_iter().map(|v| ToHost::Done {
        end: CallEnd::Returned(v),
        memory: None,
    }));
    for m in to_host {
        assert_eq!(ToHost::decode(&m.encode()), Ok(m));
    }
}

#[test]
fn garbage_is_malformed_never_a_panic() {
    let valid = ToHost::Loaded(Description {
        name: "n".into(),
        version: "v".into(),
        sdk_version: "s".into(),
        abi_version: "a".into(),
        root_fields: 1,
        functions: vec![],
        default_function: None,
    })
    .encode();
    // Every truncation, and every single-byte corruption.
    for n in 0..valid.len() {
        assert!(ToHost::decode(&valid[..n]).is_err());
    }
    for i in 0..valid.len() {
        for b in [0u8, 1, 0x7f, 0xff] {
            let mut bad = valid.clone();
            bad[i] = b;
            let _ = ToHost::decode(&bad);
        }
    }
    // A count claiming more items than the message could hold.
    let mut huge = vec![LOADED];
    for _ in 0..4 {
        huge.extend_from_slice(&0u64.to_le_bytes());
    }
    huge.extend_from_slice(&0u64.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        ToHost::decode(&huge),
        Err(Malformed("a count larger than the message"))
    );
    assert!(ToHost::decode(&[DONE, 0, 2, 0xff]).is_err());
    assert!(ToHost::decode(&[]).is_err());
}
