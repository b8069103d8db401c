//! Promote and Rollback.

use super::*;

// --- Promote ---

#[test]
fn promote_unknown_is_not_found() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    let msg = h.rejected(promote("nope", None, &[]), Rejection::NotFound);
    assert!(msg.contains("ranker@nope"), "{msg}");
    assert!(h.reg.active.is_none());
}

#[test]
fn promote_with_a_required_node_not_ready_names_the_node() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(ready(1, "v1"));
    let msg = h.rejected(promote("v1", None, &[1, 42]), Rejection::FailedPrecondition);
    assert!(msg.contains("ranker@v1"), "{msg}");
    assert!(msg.contains("node 42"), "{msg}");
    assert!(msg.contains("not ready"), "{msg}");
    assert!(!msg.contains("node 1:"), "a ready node is named: {msg}");
    assert!(h.reg.active.is_none());
    assert!(h.reg.history.is_empty());
}

#[test]
fn promote_rejection_gives_the_reported_failure_reason() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(ready(1, "v1"));
    h.ok(ready(2, "v1"));
    h.ok(failed(2, "v1", "validation: ndcg dropped"));
    h.ok(failed(3, "v2", "unrelated"));
    let msg = h.rejected(
        promote("v1", None, &[1, 2, 3]),
        Rejection::FailedPrecondition,
    );
    assert!(msg.contains("node 2: validation: ndcg dropped"), "{msg}");
    // Node 3 failed a different version: for v1 it is just not ready.
    assert!(msg.contains("node 3: not ready"), "{msg}");
    assert!(!msg.contains("unrelated"), "{msg}");
}

#[test]
fn promote_with_all_required_ready_activates() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(ready(1, "v1"));
    h.ok(ready(2, "v1"));
    let out = h.reg.apply(9, 17, &promote("v1", None, &[1, 2]));
    let want = Fence {
        model: m("v1"),
        term: 9,
        index: 17,
    };
    assert_eq!(
        out,
        Outcome::Applied {
            fence: Some(want.clone())
        }
    );
    assert_eq!(h.reg.active, Some(want));
    assert_eq!(h.reg.previous, None);
    assert_eq!(
        h.reg.history,
        vec![HistoryEntry {
            action: "promote".to_string(),
            by: "bob".to_string(),
            at_ms: 1_700_000_000_123,
            from: None,
            to: m("v1"),
            term: 9,
            index: 17,
            detail: String::new(),
        }]
    );
}

#[test]
fn promote_with_no_required_nodes_activates() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    assert_eq!(h.fenced(promote("v1", None, &[])), fence("v1", 2));
}

#[test]
fn promote_moves_active_to_previous_and_appends_history() {
    let h = with_v2_active();
    assert_eq!(h.reg.active, Some(fence("v2", 8)));
    assert_eq!(h.reg.previous, Some(fence("v1", 5)));
    assert_eq!(h.reg.history.len(), 2);
    let last = &h.reg.history[1];
    assert_eq!(last.action, "promote");
    assert_eq!(last.from, Some(m("v1")));
    assert_eq!(last.to, m("v2"));
    assert_eq!(last.by, "bob");
    assert_eq!(last.at_ms, 1_700_000_000_123);
    assert_eq!((last.term, last.index), (TERM, 8));
    // The first entry is untouched: history is append-only.
    assert_eq!(h.reg.history[0].to, m("v1"));
    assert_eq!(h.reg.history[0].from, None);
    assert_eq!(h.reg.history[0].index, 5);
}

#[test]
fn promote_of_the_active_version_is_a_no_op() {
    let mut h = with_v1_active();
    let before = h.reg.clone();
    // The existing fence comes back, not one for this entry's index.
    assert_eq!(h.fenced(promote("v1", None, &[1, 2])), fence("v1", 5));
    assert_eq!(h.reg, before);
    assert_eq!(h.reg.history.len(), 1);
    // Even when a required node is not ready (nothing is activated).
    assert_eq!(h.fenced(promote("v1", Some("v1"), &[99])), fence("v1", 5));
    assert_eq!(h.reg, before);
}

#[test]
fn promote_expect_mismatch_names_both_versions() {
    let mut h = with_v1_active();
    let msg = h.rejected(
        promote("v2", Some("v0"), &[1, 2]),
        Rejection::FailedPrecondition,
    );
    assert!(msg.contains("ranker@v0"), "{msg}");
    assert!(msg.contains("ranker@v1"), "{msg}");
    assert_eq!(h.reg.active, Some(fence("v1", 5)));
}

#[test]
fn promote_expect_with_nothing_active_names_none() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    let msg = h.rejected(
        promote("v1", Some("v0"), &[]),
        Rejection::FailedPrecondition,
    );
    assert!(msg.contains("ranker@v0"), "{msg}");
    assert!(msg.contains("none"), "{msg}");
}

#[test]
fn promote_expect_match_applies() {
    let mut h = with_v1_active();
    assert_eq!(h.fenced(promote("v2", Some("v1"), &[1, 2])), fence("v2", 8));
    assert_eq!(h.reg.active, Some(fence("v2", 8)));
    assert_eq!(h.reg.previous, Some(fence("v1", 5)));
}

#[test]
fn promote_of_a_retired_version_is_refused() {
    let mut h = with_v2_active();
    h.ok(register("v3", 1));
    h.ok(ready(1, "v3"));
    h.ok(retire("v3"));
    let msg = h.rejected(promote("v3", None, &[]), Rejection::FailedPrecondition);
    assert!(msg.contains("ranker@v3"), "{msg}");
    assert!(msg.contains("retired"), "{msg}");
}

// --- Rollback ---

#[test]
fn rollback_with_no_previous_is_refused() {
    let mut h = Harness::new();
    let msg = h.rejected(rollback(None), Rejection::FailedPrecondition);
    assert!(msg.contains("no previous"), "{msg}");
    // Still refused with one promotion only.
    let mut h = with_v1_active();
    h.rejected(rollback(None), Rejection::FailedPrecondition);
    h.rejected(rollback(Some("v1")), Rejection::FailedPrecondition);
}

#[test]
fn rollback_swaps_active_and_previous_with_a_new_fence() {
    let mut h = with_v2_active();
    assert_eq!(h.fenced(rollback(None)), fence("v1", 9));
    assert_eq!(h.reg.active, Some(fence("v1", 9)));
    assert_eq!(h.reg.previous, Some(fence("v2", 8)));
    assert_eq!(h.reg.history.len(), 3);
    assert_eq!(
        h.reg.history[2],
        HistoryEntry {
            action: "rollback".to_string(),
            by: "carol".to_string(),
            at_ms: 1_700_000_999_000,
            from: Some(m("v2")),
            to: m("v1"),
            term: TERM,
            index: 9,
            detail: String::new(),
        }
    );
    // A second rollback goes forward again, with yet another fence.
    assert_eq!(h.fenced(rollback(Some("v1"))), fence("v2", 10));
    assert_eq!(h.reg.previous, Some(fence("v1", 9)));
    assert_eq!(h.reg.history.len(), 4);
}

#[test]
fn rollback_expect_mismatch_is_refused() {
    let mut h = with_v2_active();
    let msg = h.rejected(rollback(Some("v1")), Rejection::FailedPrecondition);
    assert!(msg.contains("ranker@v1"), "{msg}");
    assert!(msg.contains("ranker@v2"), "{msg}");
}

#[test]
fn rollback_requires_the_previous_version_ready_on_required_nodes() {
    let mut h = with_v2_active();
    h.ok(Command::ReportUnloaded {
        node: 2,
        model: m("v1"),
    });
    let msg = h.rejected(
        Command::Rollback {
            expect: None,
            required: vec![1, 2],
            by: "carol".into(),
            at_ms: 1,
        },
        Rejection::FailedPrecondition,
    );
    assert!(msg.contains("node 2: not ready"), "{msg}");
    assert!(!msg.contains("node 1"), "{msg}");
    h.ok(ready(2, "v1"));
    let f = h.fenced(Command::Rollback {
        expect: None,
        required: vec![1, 2],
        by: "carol".into(),
        at_ms: 1,
    });
    assert_eq!(f.model, m("v1"));
}

#[test]
fn report_unloaded_makes_a_node_not_ready_without_a_failure() {
    let mut h = with_v1_active();
    h.ok(Command::ReportUnloaded {
        node: 1,
        model: m("v2"),
    });
    assert!(!h.reg.is_ready(1, &m("v2")));
    assert!(h.reg.is_ready(2, &m("v2")));
    assert!(h.reg.failed.get(&1).is_none_or(|f| f.is_empty()));
    let msg = h.rejected(promote("v2", None, &[1, 2]), Rejection::FailedPrecondition);
    assert!(msg.contains("node 1: not ready"), "{msg}");
}

#[test]
fn prepare_marks_the_version_until_an_activation_clears_it() {
    let mut h = with_v1_active();
    h.rejected(Command::Prepare { model: m("nope") }, Rejection::NotFound);
    h.ok(Command::Prepare { model: m("v2") });
    assert_eq!(h.reg.preparing, Some(m("v2")));
    h.fenced(promote("v2", None, &[1, 2]));
    assert_eq!(h.reg.preparing, None);
}
