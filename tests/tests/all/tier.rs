//! The inline tier: which functions run on a runtime worker, when they
//! stop, and that such a function cannot stall the server. These tests show
//! the tier's behaviour, never its speed: the budgets are far from the run
//! times involved (a `nop` against a second, a 300 ms sleep against 200 ms).

use std::time::Duration;

use spearlet::artifact::ArtifactSpec;
use spearlet::config::TiersConfig;
use spearlet::exec::{ExecutionMode, ExecutionQuery, ExecutionStatus};
use spearlet::invoke::{InvokeRequest, Target};
use spearlet::tier::Tier;
use spearlet::{Config, Host, Value};
use spearlet_test_artifacts::Artifact;
use tonic::Code;

use crate::grpc_util::*;

fn host(budget: Duration, warm_up: u32) -> (Host, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        tiers: TiersConfig {
            inline_budget: budget,
            inline_warm_up: warm_up,
            ..TiersConfig::default()
        },
        ..crate::helpers::config_in(data.path())
    };
    (Host::new(config).unwrap(), data)
}

fn call(artifact: Artifact, function: &str, params: &[(&str, Value)]) -> InvokeRequest {
    let mut req = InvokeRequest::new(
        Target::NewTask {
            name: format!("{artifact:?}").to_lowercase(),
            description: String::new(),
            artifact: ArtifactSpec::at(artifact.path().to_string_lossy()),
        },
        function,
    );
    for (name, value) in params {
        req = req.param(*name, value.clone());
    }
    req
}

/// Calls `req` and checks it completed; returns the tier `function` is in after.
async fn run(host: &Host, req: InvokeRequest) -> Tier {
    let function = req.function.clone();
    let out = host.invoke(req).await.unwrap();
    assert_eq!(
        out.execution.status,
        ExecutionStatus::Completed,
        "{:?}",
        out.execution.error
    );
    let task = host.task(&out.task_id).unwrap();
    let handle = task.plugin.function(&function).unwrap();
    task.profile(handle).tier()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_function_is_promoted_after_the_warm_up_and_then_runs_inline() {
    let (host, _data) = host(Duration::from_secs(1), 4);
    for _ in 0..3 {
        assert_eq!(
            run(&host, call(Artifact::Echo, "nop", &[])).await,
            Tier::OffWorker
        );
    }
    assert_eq!(host.stats().tier.promotions, 0);
    assert_eq!(
        run(&host, call(Artifact::Echo, "nop", &[])).await,
        Tier::Inline
    );
    assert_eq!(host.stats().tier.promotions, 1);
    assert_eq!(host.stats().tier.inline_runs, 0);
    for _ in 0..5 {
        assert_eq!(
            run(&host, call(Artifact::Echo, "nop", &[])).await,
            Tier::Inline
        );
    }
    assert_eq!(host.stats().tier.inline_runs, 5);
    // An inline call is recorded like any other.
    let echoed = host
        .invoke(call(Artifact::Echo, "echo", &[("input", Value::I64(7))]))
        .await
        .unwrap();
    assert_eq!(echoed.execution.output, Some(Value::I64(7)));
    // ASYNC calls stay off the workers even for a promoted function.
    let mut background = call(Artifact::Echo, "nop", &[]);
    background.mode = ExecutionMode::Async;
    let accepted = host.invoke(background).await.unwrap();
    while !host
        .execution(&accepted.execution.execution_id)
        .unwrap()
        .status
        .is_final()
    {
        tokio::task::yield_now().await;
    }
    assert_eq!(host.stats().tier.inline_runs, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_always_runs_long_is_never_run_inline() {
    let (host, _data) = host(Duration::from_millis(20), 2);
    for _ in 0..5 {
        let tier = run(
            &host,
            call(Artifact::Sleepy, "sleep", &[("ms", Value::I64(30))]),
        )
        .await;
        assert_eq!(tier, Tier::OffWorker);
    }
    let stats = host.stats();
    assert_eq!((stats.tier.promotions, stats.tier.inline_runs), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_the_hard_limit_demotes_and_the_next_warm_up_is_longer() {
    // A budget far above a `sleep(0)` even on a loaded machine, and a slow
    // run past the hard limit (30 ms here: twenty budgets, at most 10 ms over): one such run demotes (runs
    // between the budget and the hard limit are judged together; see
    // `tier.rs`).
    let (host, _data) = host(Duration::from_millis(20), 2);
    let short = || call(Artifact::Sleepy, "sleep", &[("ms", Value::I64(0))]);
    assert_eq!(run(&host, short()).await, Tier::OffWorker);
    assert_eq!(run(&host, short()).await, Tier::Inline);
    let slow = call(Artifact::Sleepy, "sleep", &[("ms", Value::I64(500))]);
    assert_eq!(
        run(&host, slow).await,
        Tier::OffWorker,
        "one run past the hard limit demotes"
    );
    let stats = host.stats();
    assert_eq!((stats.tier.promotions, stats.tier.demotions), (1, 1));
    assert_eq!(stats.tier.inline_runs, 1, "the slow run itself ran inline");
    // The warm-up doubled: two short runs are no longer enough.
    assert_eq!(run(&host, short()).await, Tier::OffWorker);
    assert_eq!(run(&host, short()).await, Tier::OffWorker);
    assert_eq!(run(&host, short()).await, Tier::OffWorker);
    assert_eq!(run(&host, short()).await, Tier::Inline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_function_is_never_inline() {
    let (host, _data) = host(Duration::from_secs(1), 2);
    for _ in 0..10 {
        let tier = run(
            &host,
            call(Artifact::Probe, "wait", &[("ms", Value::I64(0))]),
        )
        .await;
        assert_eq!(tier, Tier::Blocking);
    }
    // The same plugin's unmarked function, as short, is promoted.
    run(
        &host,
        call(Artifact::Probe, "spin", &[("ms", Value::I64(0))]),
    )
    .await;
    let tier = run(
        &host,
        call(Artifact::Probe, "spin", &[("ms", Value::I64(0))]),
    )
    .await;
    assert_eq!(tier, Tier::Inline);
    assert_eq!(host.stats().tier.promotions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_budget_turns_the_tier_off() {
    let (host, _data) = host(Duration::ZERO, 1);
    for _ in 0..10 {
        assert_eq!(
            run(&host, call(Artifact::Echo, "nop", &[])).await,
            Tier::OffWorker
        );
    }
    let stats = host.stats();
    assert_eq!((stats.tier.promotions, stats.tier.inline_runs), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_plugin_share_what_the_tier_learnt() {
    let (host, _data) = host(Duration::from_secs(1), 2);
    run(&host, call(Artifact::Echo, "nop", &[])).await;
    assert_eq!(
        run(&host, call(Artifact::Echo, "nop", &[])).await,
        Tier::Inline
    );
    let mut other = call(Artifact::Echo, "nop", &[]);
    other.target = Target::NewTask {
        name: "second-echo".into(),
        description: String::new(),
        artifact: ArtifactSpec::at(Artifact::Echo.path().to_string_lossy()),
    };
    let out = host.invoke(other).await.unwrap();
    assert!(out.created_task);
    let task = host.task(&out.task_id).unwrap();
    let nop = task.plugin.function("nop").unwrap();
    assert_eq!(task.profile(nop).tier(), Tier::Inline);
}

/// The stall of issue #21, through the real server: a promoted function
/// that ignores cancellation, called with a deadline by as many callers as
/// the runtime has workers. Each is answered at its deadline, and health
/// checks and other tasks are served while the plugin runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_function_that_ignores_its_deadline_stalls_nothing() {
    // Far longer than everything the test does before it looks at the
    // spins again, so what it sees then is unambiguous; the test waits for
    // them at the end.
    const SPIN_MS: i64 = 2_000;
    let server = TestServer::start_with(|c| {
        c.tiers.inline_budget = Duration::from_millis(50);
        c.tiers.inline_warm_up = 4;
    })
    .await;
    let created = server
        .invoke(with_params(
            new_task("probe", Artifact::Probe, "spin"),
            &[("ms", any_i64(0))],
        ))
        .await
        .unwrap();
    let spin = |ms: i64| with_params(existing(&created.task_id, "spin"), &[("ms", any_i64(ms))]);
    let task = server.host.task(&created.task_id).unwrap();
    let spin_handle = task.plugin.function("spin").unwrap();
    let mut calls = 1;
    while task.profile(spin_handle).tier() != Tier::Inline {
        assert!(calls < 1_000, "spin(0) was never promoted");
        assert!(server.invoke(spin(0)).await.unwrap().success);
        calls += 1;
    }
    let echo = server
        .invoke(with_params(
            new_task("echo", Artifact::Echo, "echo"),
            &[("input", any_i64(1))],
        ))
        .await
        .unwrap();
    let channel = tonic::transport::Channel::from_shared(server.channel_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let before = server.host.stats().tier;

    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let mut client = server.client.clone();
            let request = with_context(spin(SPIN_MS), 100, 0);
            tokio::spawn(async move { client.invoke_function(request).await })
        })
        .collect();
    for call in stuck {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    }
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert!(!server.health_info().await.is_empty());
    let echoed = server
        .invoke(with_params(
            existing(&echo.task_id, "echo"),
            &[("input", any_i64(7))],
        ))
        .await
        .unwrap();
    assert_eq!(result_i64(&echoed), 7);
    // Those replies came while both spins still ran: their instances are
    // still quarantined.
    assert_eq!(server.pool(&created.task_id).quarantined, 2);
    let (timed_out, _) = server
        .host
        .executions(&ExecutionQuery {
            task_id: Some(created.task_id.clone()),
            status: Some(ExecutionStatus::Timeout),
            limit: 10,
            ..ExecutionQuery::default()
        })
        .unwrap();
    assert_eq!(timed_out.len(), 2);

    // The watchdog demoted `spin` while it ran.
    while task.profile(spin_handle).tier() == Tier::Inline {
        crate::helpers::yield_waiting("the watchdog to demote spin").await;
    }
    while server.pool(&created.task_id).quarantined > 0 {
        crate::helpers::yield_waiting("the spins to return").await;
    }
    let after = server.host.stats().tier;
    assert_eq!(
        after.inline_runs - before.inline_runs,
        1,
        "one spin ran inline, the other over the cap"
    );
    assert_eq!(
        after.demotions - before.demotions,
        1,
        "demoted once, while it ran"
    );
    assert_eq!(task.profile(spin_handle).tier(), Tier::OffWorker);
    server.stop().await;
}
