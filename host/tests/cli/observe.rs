//! What `spearlet serve` says about itself: `spearlet health`, and its
//! JSON logs carrying the trace of the call that logged.

use std::process::Command;

use spearlet_test_artifacts::Artifact;

use crate::served::Served;
use crate::{path, spearlet, text};

#[test]
fn health_shows_the_server_and_its_sms_link() {
    let alone = Served::start("");
    let out = alone.run(&["health"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.starts_with("healthy: 0 task(s)"), "{shown}");
    assert!(shown.contains("cluster:     none"), "{shown}");
    assert!(
        shown.contains("storage:     ok (0 journal bytes waiting)"),
        "{shown}"
    );
    assert!(
        shown.contains("plugins:     0 loaded in use, 0 unused; 0 result bytes kept"),
        "{shown}"
    );
    alone.stop();

    // An SMS nobody answers at: the host serves anyway and says so.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let clustered = Served::start(&format!("[sms]\ngrpc = \"http://{dead}\"\n"));
    let out = clustered.run(&["health"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&format!("SMS:         connecting at http://{dead}/"))
            || shown.contains(&format!("SMS:         unreachable at http://{dead}/")),
        "{shown}"
    );
    assert!(shown.contains("  node:      "), "{shown}");
    let status = clustered.stop();
    assert!(status.success(), "a clean stop: {status:?}");
}

#[test]
fn json_logs_carry_the_trace_of_the_call_that_logged() {
    use std::io::{BufRead, BufReader};
    let data = tempfile::tempdir().unwrap();
    let root = Artifact::Probe.path().parent().unwrap().to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spearlet"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args([
            "--data-dir",
            data.path().to_str().unwrap(),
            "--artifact-root",
            root,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = lines
        .by_ref()
        .map(Result::unwrap)
        .find(|l| l.contains("listening on"))
        .unwrap();
    let endpoint = format!("http://{}", listening.rsplit(' ').next().unwrap());
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let out = spearlet(&[
        "invoke",
        "--endpoint",
        &endpoint,
        "--task-name",
        "probe",
        "--artifact",
        path(Artifact::Probe),
        "trace",
        "--traceparent",
        &format!("00-{trace}-b7ad6b7169203331-01"),
    ]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains(&format!("trace      {trace}")), "{shown}");
    assert!(
        shown.contains(&format!("\"{trace}\" (string)")),
        "the plugin's ctx.trace_id(): {shown}"
    );

    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
    let mut json = 0;
    let mut plugin_line = None;
    for line in lines.map(Result::unwrap).filter(|l| l.starts_with('{')) {
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        json += 1;
        if event["target"] == "plugin" {
            plugin_line = Some(event);
        }
    }
    assert!(json >= 2, "the server's own log lines are JSON too");
    let plugin_line = plugin_line.expect("the plugin's log line reached the host's log");
    assert_eq!(plugin_line["message"], "tracing this call");
    assert_eq!(plugin_line["trace_id"], trace);
    assert_eq!(plugin_line["task"].as_str().map(str::len), Some(36));
}
