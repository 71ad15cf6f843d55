//! A task's life across upgrades, rollbacks and a crash of `spearlet serve`.

use spearlet_test_artifacts::Artifact;

use crate::served::{add_2_40, Served};
use crate::{path, spearlet, text};

#[test]
fn task_upgrade_and_rollback_switch_the_version_under_one_id() {
    let served = Served::start("");
    let v1 = path(Artifact::Versioned1);
    let v2 = path(Artifact::Versioned2);
    let out = served.run(&["invoke", "--task-name", "v", "--artifact", v1, "version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("\"1.0.0\""), "{shown}");
    let id = shown
        .split("(task ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("the task id in the status line")
        .to_owned();

    let executions = |served: &Served| -> u64 {
        let out = served.ok(&["health", "--format", "json"]);
        let health: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
        health["total_executions"]
            .as_u64()
            .unwrap_or_else(|| panic!("total_executions in {health}"))
    };
    assert_eq!(executions(&served), 1);
    let out = served.run(&["task", "upgrade", &id, "--artifact", v2]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("now       2.0.0"), "{shown}");
    assert!(shown.contains("previous  1.0.0"), "{shown}");
    assert!(
        shown.contains("fresh     the new version's instances start afresh"),
        "what a switch does not keep is said: {shown}"
    );
    let out = served.run(&["invoke", "--task-id", &id, "version"]);
    assert!(
        text(&out.stdout).contains("\"2.0.0\""),
        "{}",
        text(&out.stdout)
    );
    // The task's counters start anew; the host's lifetime total does not.
    assert_eq!(executions(&served), 2);
    let shown = text(&served.run(&["task", "get", &id]).stdout);
    assert!(
        shown.contains("switched    ") && shown.contains("from 1.0.0"),
        "{shown}"
    );

    let out = served.run(&["task", "rollback", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("now       1.0.0"),
        "{}",
        text(&out.stdout)
    );
    let out = served.run(&["task", "rollback", &id]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no_previous_version"),
        "{}",
        text(&out.stderr)
    );
    served.stop();
}

/// SIGKILL while tasks are being created and ASYNC executions accepted;
/// a restart on the same data directory must have every task whose
/// creation was acknowledged, and a final status for every acknowledged
/// execution.
#[test]
fn a_crash_loses_no_acknowledged_task_or_execution() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    enum Ack {
        Task(String),
        Execution { id: String, long: bool },
    }
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start_in(dir.path(), "");
    let endpoint = served.endpoint.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let (acks, acked) = mpsc::channel();

    let creator = {
        let (endpoint, stop, acks) = (endpoint.clone(), Arc::clone(&stop), acks.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let name = format!("t{i}");
                let out = spearlet(&[
                    "invoke",
                    "--endpoint",
                    &endpoint,
                    "--task-name",
                    &name,
                    "--artifact",
                    path(Artifact::Math),
                    "add",
                    "-p",
                    "a=1",
                    "-p",
                    "b=2",
                ]);
                if out.status.success() {
                    let _ = acks.send(Ack::Task(name));
                }
            }
        })
    };
    let submitter = {
        let (endpoint, stop, acks) = (endpoint.clone(), Arc::clone(&stop), acks.clone());
        std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                // Every other one outlives the server for sure.
                let long = i % 2 == 1;
                let ms = if long { "ms=600000" } else { "ms=1" };
                let out = spearlet(&[
                    "invoke",
                    "--endpoint",
                    &endpoint,
                    "--task-name",
                    "sleepy",
                    "--artifact",
                    path(Artifact::Sleepy),
                    "sleep",
                    "-p",
                    ms,
                    "--async",
                ]);
                if out.status.success() {
                    let shown = text(&out.stdout);
                    let id = shown
                        .split_whitespace()
                        .nth(1)
                        .expect("`execution ID …`")
                        .to_owned();
                    let _ = acks.send(Ack::Execution { id, long });
                }
            }
        })
    };
    drop(acks);

    let (mut tasks, mut executions) = (Vec::new(), Vec::new());
    while tasks.len() < 6 || executions.len() < 6 {
        // Bounded, so a server that refuses everything fails the test
        // instead of hanging it.
        let ack = acked.recv_timeout(std::time::Duration::from_secs(120));
        match ack.expect("calls are acknowledged while the server runs") {
            Ack::Task(name) => tasks.push(name),
            Ack::Execution { id, long } => executions.push((id, long)),
        }
    }
    served.kill();
    stop.store(true, Ordering::Relaxed);
    creator.join().unwrap();
    submitter.join().unwrap();
    // Acknowledged before the kill, even if read after it.
    for ack in acked.try_iter() {
        match ack {
            Ack::Task(name) => tasks.push(name),
            Ack::Execution { id, long } => executions.push((id, long)),
        }
    }

    let restarted = Served::start_in(dir.path(), "");
    let listed = text(&restarted.run(&["tasks", "--limit", "10000"]).stdout);
    for name in &tasks {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "acknowledged task {name} is missing after the crash:\n{listed}"
        );
    }
    for (id, long) in &executions {
        let shown = text(&restarted.run(&["status", id]).stdout);
        assert!(
            shown.contains("completed") || shown.contains("failed: host_restarted"),
            "acknowledged execution {id} has no final status after the crash: {shown}"
        );
        if *long {
            assert!(shown.contains("host_restarted"), "{shown}");
        }
    }
    // The restarted server works on the recorded tasks.
    let out = restarted.run(&add_2_40(&tasks[0], path(Artifact::Math)));
    assert!(
        text(&out.stdout).contains("42 (i64)"),
        "{}",
        text(&out.stdout)
    );
    assert!(restarted.stop().success());
}
