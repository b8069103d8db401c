//! Bake windows: the verdict either marks the promotion baked or rolls it back, and an
//! operator's later switch ends the bake so a stale verdict cannot undo it.

use super::*;

fn baked_promote(version: &str, bake_ms: u64) -> Command {
    match promote(version, None, &[1]) {
        Command::Promote {
            model,
            expect,
            required,
            by,
            at_ms,
            ..
        } => Command::Promote {
            model,
            expect,
            required,
            by,
            at_ms,
            bake_ms,
        },
        _ => unreachable!(),
    }
}

fn verdict(version: &str, breach: Option<Breach>) -> Command {
    Command::BakeVerdict {
        model: m(version),
        breach,
        required: vec![1],
        at_ms: 1_700_000_060_000,
        summary: "judged: error share and p99 on nodes 1".into(),
    }
}

fn error_breach() -> Breach {
    Breach {
        signal: "error_ratio".into(),
        node: 2,
        measured: "0.312".into(),
        threshold: "0.050".into(),
    }
}

#[test]
fn a_promotion_with_a_window_is_baking_until_its_verdict() {
    let mut h = with_v1_active();
    let f = h.fenced(baked_promote("v2", 60_000));
    let bake = h.reg.baking.clone().expect("baking");
    assert_eq!(bake.model, m("v2"));
    assert_eq!(bake.from, Some(m("v1")));
    assert_eq!(bake.index, f.index);
    assert_eq!(bake.until_ms, 1_700_000_000_123 + 60_000);

    h.ok(verdict("v2", None));
    assert!(h.reg.baking.is_none());
    assert_eq!(h.reg.active.as_ref().map(|a| &a.model), Some(&m("v2")));
    let last = h.reg.history.last().unwrap();
    assert_eq!(last.action, "baked");
    assert_eq!(last.by, BAKE_WATCH);
    assert_eq!(last.to, m("v2"));
    assert!(
        last.detail.contains("judged: error share"),
        "{}",
        last.detail
    );
}

#[test]
fn a_promotion_without_a_window_is_not_baking() {
    let mut h = with_v1_active();
    h.fenced(baked_promote("v2", 0));
    assert!(h.reg.baking.is_none());
    h.rejected(verdict("v2", None), Rejection::FailedPrecondition);
}

#[test]
fn a_first_promotion_is_not_baked() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(ready(1, "v1"));
    h.fenced(baked_promote("v1", 60_000));
    assert!(h.reg.baking.is_none(), "nothing to roll back to");
}

#[test]
fn a_breach_rolls_back_and_names_the_signal_node_and_figures() {
    let mut h = with_v1_active();
    h.fenced(baked_promote("v2", 60_000));
    let f = h.fenced(verdict("v2", Some(error_breach())));
    assert_eq!(f.model, m("v1"));
    assert_eq!(h.reg.active.as_ref().map(|a| &a.model), Some(&m("v1")));
    assert_eq!(h.reg.previous.as_ref().map(|a| &a.model), Some(&m("v2")));
    assert!(h.reg.baking.is_none());
    let last = h.reg.history.last().unwrap();
    assert_eq!(last.action, "rollback");
    assert_eq!(last.by, BAKE_WATCH);
    assert_eq!(last.from, Some(m("v2")));
    for part in ["ranker@v2", "error_ratio", "node 2", "0.312", "0.050"] {
        assert!(
            last.detail.contains(part),
            "{part} missing: {}",
            last.detail
        );
    }
}

#[test]
fn a_breach_needs_the_previous_version_ready_on_the_required_nodes() {
    let mut h = with_v1_active();
    h.fenced(baked_promote("v2", 60_000));
    let cmd = Command::BakeVerdict {
        model: m("v2"),
        breach: Some(error_breach()),
        required: vec![1, 3],
        at_ms: 1,
        summary: String::new(),
    };
    let msg = h.rejected(cmd, Rejection::FailedPrecondition);
    assert!(msg.contains("node 3"), "{msg}");
}

#[test]
fn an_operator_switch_ends_the_bake_and_a_stale_verdict_is_rejected() {
    let mut h = with_v1_active();
    h.fenced(baked_promote("v2", 60_000));
    h.fenced(rollback(None));
    assert!(h.reg.baking.is_none());
    let last = h.reg.history.last().unwrap();
    assert_eq!(last.action, "rollback");
    assert!(
        last.detail.contains("ended the bake of ranker@v2"),
        "{}",
        last.detail
    );
    let msg = h.rejected(
        verdict("v2", Some(error_breach())),
        Rejection::FailedPrecondition,
    );
    assert!(msg.contains("not being baked"), "{msg}");
    assert_eq!(h.reg.active.as_ref().map(|a| &a.model), Some(&m("v1")));
}

#[test]
fn a_bake_survives_the_snapshot_round_trip() {
    let mut h = with_v1_active();
    h.fenced(baked_promote("v2", 60_000));
    let json = serde_json::to_string(&h.reg).unwrap();
    let back: Registry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, h.reg);
}
