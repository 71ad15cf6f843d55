//! The store's own tests: status moves, eviction by count and age, the
//! unlisted records' keep rule, counts, paging and sharding.

use super::*;
use crate::Value;

fn names() -> (Arc<str>, Arc<str>) {
    (Arc::from("t"), Arc::from("f"))
}

fn finished(store: &ExecutionStore, id: Option<&str>, task: &str) -> Arc<ExecutionRecord> {
    let (r, _) = store.create(id, &Arc::from(task), &Arc::from("f"), ExecutionMode::Sync);
    r.start_attempt(&Arc::from("i"));
    r.finish(ExecutionStatus::Completed, Some(Value::Unit), None);
    r
}

#[test]
fn status_moves_forward_only() {
    let store = ExecutionStore::new(10, Duration::from_secs(60));
    let (t, f) = names();
    let (r, created) = store.create(Some("e1"), &t, &f, ExecutionMode::Async);
    assert!(created);
    assert_eq!(r.status(), ExecutionStatus::Pending);
    assert!(r.start_attempt(&Arc::from("inst-1")).is_some());
    assert_eq!(r.status(), ExecutionStatus::Running);
    assert!(r.finish(ExecutionStatus::Cancelled, None, None));
    assert!(
        !r.finish(ExecutionStatus::Completed, None, None),
        "the first end wins"
    );
    assert!(r.start_attempt(&Arc::from("inst-2")).is_none());
    assert_eq!(r.snapshot().status, ExecutionStatus::Cancelled);
    let (again, created) = store.create(Some("e1"), &t, &f, ExecutionMode::Sync);
    assert!(!created && Arc::ptr_eq(&again, &r), "ids are idempotent");
}

/// Issue #25: whether a cancellation is a plain request or a reason of
/// the host's is said by its type, whatever the reason's code.
#[test]
fn a_host_reason_is_kept_whatever_its_code_and_a_plain_request_is_not() {
    use crate::exec::{CancelOutcome, CancelReason, ExecutionError};
    let store = ExecutionStore::new(10, Duration::from_secs(60));
    let (t, f) = names();
    let plugins_account = ExecutionError::new("stopped", "the plugin's own account");

    let (plain, _) = store.create(None, &t, &f, ExecutionMode::Async);
    plain.start_attempt(&Arc::from("i"));
    let outcome = plain.cancel(false, CancelReason::Requested);
    assert_eq!(outcome, CancelOutcome::Requested);
    assert_eq!(
        plain.cancelled_error(plugins_account.clone()),
        plugins_account,
        "a plain request keeps the plugin's account"
    );

    let (hosts, _) = store.create(None, &t, &f, ExecutionMode::Async);
    hosts.start_attempt(&Arc::from("i"));
    let reason = ExecutionError::cancelled("the host's reason, with the code `cancelled`");
    let outcome = hosts.cancel(false, CancelReason::Host(reason.clone()));
    assert_eq!(outcome, CancelOutcome::Requested);
    assert_eq!(hosts.cancelled_error(plugins_account), reason);

    let (pending, _) = store.create(None, &t, &f, ExecutionMode::Async);
    let outcome = pending.cancel(false, CancelReason::Requested);
    assert_eq!(outcome, CancelOutcome::Cancelled);
    let error = pending.snapshot().error.expect("ended with an error");
    assert_eq!(error.code, ExecutionError::CANCELLED);
}

#[test]
fn evicts_by_count_oldest_finished_first() {
    let store = ExecutionStore::new(3, Duration::from_secs(60));
    let (t, f) = names();
    let (running, _) = store.create(None, &t, &f, ExecutionMode::Async);
    let ids: Vec<String> = (0..4)
        .map(|_| finished(&store, None, "t").id().to_owned())
        .collect();
    assert_eq!(store.len(), 3);
    assert!(store.get(running.id()).is_some(), "unfinished records stay");
    assert!(store.get(&ids[0]).is_none() && store.get(&ids[1]).is_none());
    assert!(store.get(&ids[3]).is_some());
}

#[test]
fn evicts_by_age_whatever_the_ids() {
    // Client-chosen ids that sort before (and after) generated ones.
    let store = ExecutionStore::new(3, Duration::from_secs(60));
    let first = finished(&store, Some("zzz-oldest"), "t");
    let second = finished(&store, Some("000-second"), "t");
    let third = finished(&store, None, "t");
    let newest = finished(&store, Some("aaa-newest"), "t");
    assert!(store.get(first.id()).is_none(), "the oldest goes first");
    for kept in [&second, &third, &newest] {
        assert!(store.get(kept.id()).is_some(), "{} was evicted", kept.id());
    }
    let listed: Vec<_> = store
        .list(&ExecutionQuery {
            limit: 10,
            ..ExecutionQuery::default()
        })
        .unwrap()
        .0
        .into_iter()
        .map(|s| s.execution_id.to_string())
        .collect();
    assert_eq!(listed, ["000-second", third.id(), "aaa-newest"]);
}

#[test]
fn unlisted_records_are_kept_only_when_they_fail_or_log() {
    let store = ExecutionStore::new(100, Duration::from_secs(60)).keeping_completed_sync(false);
    let (t, f) = names();
    let run = |status: ExecutionStatus, log: bool| {
        let id = super::super::ids::next(Instant::now());
        let r = store.unlisted_record(id, &t, &f, Instant::now());
        assert_eq!(store.counts().held(ExecutionStatus::Pending), 1);
        r.start_attempt(&Arc::from("i"));
        if log {
            r.log("INFO hello".to_owned());
        }
        let output = (status == ExecutionStatus::Completed).then(|| Value::Bytes(vec![7; 64]));
        r.finish(status, output, None);
        let id = r.id().to_owned();
        (store.settle_unlisted(r), id)
    };
    let (first, first_id) = run(ExecutionStatus::Completed, false);
    assert_eq!(
        first.output,
        Some(Value::Bytes(vec![7; 64])),
        "moved to the caller"
    );
    assert_eq!(&*first.execution_id, first_id);
    assert!(
        store.get(&first_id).is_none(),
        "a completed one is not kept"
    );
    let (failed, failed_id) = run(ExecutionStatus::Failed, false);
    assert_eq!(failed.status, ExecutionStatus::Failed);
    let kept = store.get(&failed_id).expect("a failed one is kept");
    assert_eq!(kept.status(), ExecutionStatus::Failed);
    let (logged, logged_id) = run(ExecutionStatus::Completed, true);
    assert_eq!(logged.logs, ["INFO hello"]);
    assert!(store.get(&logged_id).is_some(), "one that logged is kept");
    let c = store.counts();
    assert_eq!((c.ended, c.completed), (3, 2));
    assert_eq!(c.held(ExecutionStatus::Completed), 1);
    assert_eq!(c.held(ExecutionStatus::Failed), 1);
    assert_eq!(
        c.held(ExecutionStatus::Pending) + c.held(ExecutionStatus::Running),
        0
    );
}

#[test]
fn evicts_finished_records_past_their_ttl() {
    let store = ExecutionStore::new(100, Duration::ZERO);
    let done = finished(&store, None, "t");
    let (t, f) = names();
    let (running, _) = store.create(None, &t, &f, ExecutionMode::Async);
    assert!(store.get(done.id()).is_none());
    assert!(store.get(running.id()).is_some());
}

#[test]
fn counts_follow_the_records() {
    let store = ExecutionStore::new(2, Duration::from_secs(60));
    let (t, f) = names();
    let (pending, _) = store.create(None, &t, &f, ExecutionMode::Async);
    for _ in 0..3 {
        finished(&store, None, "t");
    }
    let c = store.counts();
    assert_eq!(c.held(ExecutionStatus::Pending), 1);
    assert_eq!(c.held(ExecutionStatus::Completed), 1, "two were evicted");
    assert_eq!((c.ended, c.completed), (3, 3));
    pending.start_attempt(&Arc::from("i"));
    assert_eq!(store.counts().held(ExecutionStatus::Running), 1);
    assert_eq!(store.counts().held(ExecutionStatus::Pending), 0);
}

#[test]
fn lists_pages_with_filters() {
    let store = ExecutionStore::new(100, Duration::from_secs(60));
    for task in ["a", "b", "a", "a"] {
        finished(&store, None, task);
    }
    let q = ExecutionQuery {
        task_id: Some("a".into()),
        limit: 2,
        ..ExecutionQuery::default()
    };
    let (page, more) = store.list(&q).unwrap();
    assert_eq!((page.len(), more), (2, true));
    let next = ExecutionQuery {
        start_after: Some(page[1].execution_id.to_string()),
        ..q.clone()
    };
    let (rest, more) = store.list(&next).unwrap();
    assert_eq!((rest.len(), more), (1, false));
    let failed = ExecutionQuery {
        status: Some(ExecutionStatus::Failed),
        limit: 10,
        ..ExecutionQuery::default()
    };
    assert!(store.list(&failed).unwrap().0.is_empty());
    let gone = ExecutionQuery {
        start_after: Some("no-such-id".into()),
        ..q
    };
    assert!(matches!(
        store.list(&gone),
        Err(Error::ExecutionNotFound { .. })
    ));
}

#[test]
fn large_bounds_use_shards_and_keep_about_the_bound() {
    let store = ExecutionStore::new(4096, Duration::from_secs(60));
    assert_eq!(store.shards.len(), MAX_SHARDS);
    for _ in 0..10_000 {
        finished(&store, None, "t");
    }
    let held = store.len();
    assert!((4096 - MAX_SHARDS * 64..=4096).contains(&held), "{held}");
}
