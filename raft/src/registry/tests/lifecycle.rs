//! Register, readiness reports, Retire, ForgetNode, holders, and whole-registry invariants.

use super::*;

// --- Register ---

#[test]
fn register_records_the_version() {
    let mut h = Harness::new();
    h.ok(register("v1", 7));
    let got = &h.reg.versions[&m("v1")];
    assert_eq!(got, &info("v1", "pt-v1", 7));
    assert_eq!(h.reg.versions.len(), 1);
    assert!(h.reg.active.is_none());
    assert!(h.reg.history.is_empty());
}

#[test]
fn register_clears_a_proposed_retired_flag() {
    let mut h = Harness::new();
    let mut i = info("v1", "pt-v1", 1);
    i.retired = true;
    h.ok(Command::Register { info: i });
    assert!(!h.reg.versions[&m("v1")].retired);
}

#[test]
fn register_is_idempotent_for_the_same_content() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    let before = h.reg.clone();
    // Same plaintext, even from another origin with a different sealed artifact: accepted
    // and the first record is kept.
    let mut again = info("v1", "pt-v1", 2);
    again.sha256 = "resealed".to_string();
    h.ok(Command::Register { info: again });
    assert_eq!(h.reg, before);
    assert_eq!(h.reg.versions[&m("v1")].origin, 1);
}

#[test]
fn register_different_content_is_already_exists() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    let msg = h.rejected(
        Command::Register {
            info: info("v1", "other-content", 1),
        },
        Rejection::AlreadyExists,
    );
    assert!(msg.contains("ranker@v1"), "{msg}");
    assert!(msg.contains("pt-v1"), "{msg}");
    assert_eq!(h.reg.versions[&m("v1")].plaintext_sha256, "pt-v1");
}

#[test]
fn register_of_a_retired_version_is_already_exists() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(retire("v1"));
    h.rejected(register("v1", 1), Rejection::AlreadyExists);
    assert!(h.reg.versions[&m("v1")].retired);
}

#[test]
fn same_version_string_under_another_name_is_a_different_model() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(Command::Register {
        info: VersionInfo {
            model: ModelRef::new("other", "v1"),
            ..info("v1", "different", 1)
        },
    });
    assert_eq!(h.reg.versions.len(), 2);
}

fn compressed(version: &str, parent: &str) -> Command {
    Command::Register {
        info: VersionInfo {
            lineage: Some(Lineage {
                parent: parent.into(),
                method: "int8".into(),
                params: "{}".into(),
                k: 10,
                eval_queries: 200,
                ndcg_ppm: 935_000,
                parent_ndcg_ppm: 940_000,
                overlap_ppm: 900_000,
                margin_ppm: 10_000,
                override_reason: None,
            }),
            ..info(version, &format!("pt-{version}"), 1)
        },
    }
}

#[test]
fn a_compressed_version_is_registered_with_a_history_entry_naming_its_parent() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(compressed("v1-int8", "v1"));
    assert!(h.reg.versions[&m("v1-int8")].lineage.is_some());
    let entry = h.reg.history.last().expect("a register entry");
    assert_eq!(entry.action, "register");
    assert_eq!(entry.from, Some(m("v1")));
    assert_eq!(entry.to, m("v1-int8"));
    assert_eq!(entry.by, "alice");
    assert!(
        entry
            .detail
            .starts_with("int8 of v1: NDCG@10 0.9350 vs 0.9400"),
        "{}",
        entry.detail
    );
    // Registering the same content again is a no-op, not a second entry.
    h.ok(compressed("v1-int8", "v1"));
    assert_eq!(h.reg.history.len(), 1);
}

#[test]
fn a_compressed_version_of_an_unregistered_parent_is_rejected() {
    let mut h = Harness::new();
    let msg = h.rejected(compressed("v2-int8", "v2"), Rejection::FailedPrecondition);
    assert!(msg.contains("parent ranker@v2 is not registered"), "{msg}");
}

// --- ReportReady / ReportFailed ---

#[test]
fn report_ready_for_unknown_version_is_not_found() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    let msg = h.rejected(ready(2, "nope"), Rejection::NotFound);
    assert!(msg.contains("ranker@nope"), "{msg}");
    assert!(!h.reg.is_ready(2, &m("nope")));
    assert!(h.reg.ready.is_empty());
}

#[test]
fn report_ready_marks_the_node_ready() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    assert!(!h.reg.is_ready(2, &m("v1")));
    h.ok(ready(2, "v1"));
    assert!(h.reg.is_ready(2, &m("v1")));
    assert!(!h.reg.is_ready(1, &m("v1")));
    // Reporting twice is harmless.
    let before = h.reg.clone();
    h.ok(ready(2, "v1"));
    assert_eq!(h.reg, before);
}

#[test]
fn report_failed_clears_ready_and_report_ready_clears_failed() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(ready(2, "v1"));
    h.ok(failed(2, "v1", "checksum mismatch"));
    assert!(!h.reg.is_ready(2, &m("v1")));
    assert_eq!(h.reg.failed[&2][&m("v1")], "checksum mismatch");
    h.ok(ready(2, "v1"));
    assert!(h.reg.is_ready(2, &m("v1")));
    assert!(!h.reg.failed[&2].contains_key(&m("v1")));
}

#[test]
fn report_failed_keeps_the_latest_reason() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(failed(2, "v1", "first"));
    h.ok(failed(2, "v1", "second"));
    assert_eq!(h.reg.failed[&2][&m("v1")], "second");
}

// --- Retire ---

#[test]
fn retire_of_active_or_previous_is_refused() {
    let mut h = with_v2_active();
    let msg = h.rejected(retire("v2"), Rejection::FailedPrecondition);
    assert!(msg.contains("ranker@v2"), "{msg}");
    let msg = h.rejected(retire("v1"), Rejection::FailedPrecondition);
    assert!(msg.contains("ranker@v1"), "{msg}");
    assert!(!h.reg.versions[&m("v1")].retired);
    assert!(!h.reg.versions[&m("v2")].retired);
}

#[test]
fn retire_of_unknown_is_not_found() {
    let mut h = with_v2_active();
    h.rejected(retire("nope"), Rejection::NotFound);
}

#[test]
fn retire_marks_retired_and_removes_from_ready_sets() {
    let mut h = with_v2_active();
    h.ok(register("v3", 1));
    h.ok(ready(1, "v3"));
    h.ok(ready(2, "v3"));
    h.ok(ready(3, "v3"));
    h.ok(retire("v3"));
    assert!(h.reg.versions[&m("v3")].retired);
    for node in [1, 2, 3] {
        assert!(!h.reg.is_ready(node, &m("v3")), "node {node}");
    }
    // Other versions' readiness is untouched.
    assert!(h.reg.is_ready(1, &m("v1")));
    assert!(h.reg.is_ready(2, &m("v2")));
    // The record stays (a retired version is still known), and active/previous stand.
    assert!(h.reg.versions.contains_key(&m("v3")));
    assert_eq!(h.reg.active, Some(fence("v2", 8)));
}

#[test]
fn retire_a_version_no_longer_previous() {
    // v1 -> v2 -> v3: v1 is neither active nor previous any more, so it can be retired.
    let mut h = with_v2_active();
    h.ok(register("v3", 1));
    h.ok(ready(1, "v3"));
    h.fenced(promote("v3", None, &[1]));
    h.ok(retire("v1"));
    assert!(h.reg.versions[&m("v1")].retired);
    h.rejected(promote("v1", None, &[]), Rejection::FailedPrecondition);
}

// --- ForgetNode ---

#[test]
fn forget_node_records_the_id_and_drops_its_entries() {
    let mut h = with_v1_active();
    h.ok(failed(2, "v2", "oom"));
    h.ok(failed(3, "v1", "disk full"));
    h.ok(Command::ForgetNode { node: 2 });
    assert!(h.reg.forgotten.contains(&2));
    assert!(!h.reg.ready.contains_key(&2));
    assert!(!h.reg.failed.contains_key(&2));
    // Other nodes are untouched.
    assert!(h.reg.is_ready(1, &m("v1")));
    assert_eq!(h.reg.failed[&3][&m("v1")], "disk full");
    assert!(!h.reg.forgotten.contains(&1));
    // A forgotten node can no longer satisfy a promotion's requirement.
    h.rejected(promote("v2", None, &[1, 2]), Rejection::FailedPrecondition);
    // Forgetting twice is harmless.
    let before = h.reg.clone();
    h.ok(Command::ForgetNode { node: 2 });
    assert_eq!(h.reg, before);
}

// --- holders ---

#[test]
fn holders_lists_the_origin_first_then_ready_nodes_without_duplicates() {
    let mut h = Harness::new();
    h.ok(register("v1", 5));
    assert_eq!(h.reg.holders(&m("v1")), vec![5]);
    h.ok(ready(9, "v1"));
    h.ok(ready(2, "v1"));
    h.ok(ready(5, "v1"));
    h.ok(ready(7, "v1"));
    h.ok(failed(7, "v1", "bad"));
    // Origin first, then ready nodes in id order; the origin is not repeated and a node
    // that reported a failure is not listed.
    assert_eq!(h.reg.holders(&m("v1")), vec![5, 2, 9]);
    assert!(h.reg.holders(&m("unknown")).is_empty());
}

#[test]
fn holders_of_an_unregistered_version_is_empty() {
    let h = with_v1_active();
    assert_eq!(h.reg.holders(&m("v9")), Vec::<NodeId>::new());
    assert_eq!(h.reg.holders(&m("v1")), vec![1, 2]);
}

// --- Invariants ---

/// A sequence with accepted and rejected commands of every kind.
fn script() -> Vec<Command> {
    vec![
        register("v1", 1),
        register("v2", 2),
        register("v3", 3),
        Command::Register {
            info: info("v1", "conflict", 1),
        },
        ready(1, "v1"),
        ready(2, "v1"),
        ready(3, "v1"),
        ready(4, "nope"),
        promote("v1", None, &[1, 2, 3]),
        ready(1, "v2"),
        failed(2, "v2", "load failed"),
        promote("v2", None, &[1, 2]),
        ready(2, "v2"),
        promote("v2", Some("v0"), &[1, 2]),
        promote("v2", Some("v1"), &[1, 2]),
        rollback(Some("v2")),
        promote("v1", None, &[1]),
        retire("v2"),
        retire("v3"),
        promote("v3", None, &[]),
        failed(3, "v3", "gone"),
        Command::ForgetNode { node: 3 },
        failed(1, "v3", "corrupt"),
        rollback(None),
    ]
}

#[test]
fn applying_the_same_commands_gives_equal_registries() {
    let mut a = Harness::new();
    let mut b = Harness::new();
    let mut outcomes = Vec::new();
    for cmd in script() {
        let oa = a.apply(cmd.clone());
        let ob = b.apply(cmd);
        assert_eq!(oa, ob);
        outcomes.push(oa);
    }
    assert_eq!(a.reg, b.reg);
    // The script exercised both accepted and rejected paths and activations.
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Rejected { .. })));
    assert!(outcomes
        .iter()
        .any(|o| matches!(o, Outcome::Applied { fence: Some(_) })));
    assert!(a.reg.history.len() >= 3);
    assert!(!a.reg.forgotten.is_empty());
}

#[test]
fn every_rejection_in_a_script_leaves_the_registry_unchanged() {
    let mut h = Harness::new();
    let mut rejections = 0;
    for cmd in script() {
        let before = h.reg.clone();
        if let Outcome::Rejected { .. } = h.apply(cmd.clone()) {
            rejections += 1;
            assert_eq!(
                h.reg, before,
                "{cmd:?} was rejected but changed the registry"
            );
        }
    }
    assert!(rejections >= 4, "only {rejections} rejections");
}

#[test]
fn serde_round_trip_of_a_populated_registry() {
    let mut h = Harness::new();
    for cmd in script() {
        h.apply(cmd);
    }
    let reg = h.reg;
    // Every map is populated, so the round trip covers every field.
    assert!(!reg.versions.is_empty());
    assert!(!reg.ready.is_empty());
    assert!(reg.failed.values().any(|f| !f.is_empty()));
    assert!(reg.active.is_some());
    assert!(reg.previous.is_some());
    assert!(!reg.history.is_empty());
    assert!(!reg.forgotten.is_empty());
    assert!(reg.versions.values().any(|v| v.retired));

    let json = serde_json::to_string(&reg).expect("registry serializes to JSON");
    let back: Registry = serde_json::from_str(&json).expect("registry deserializes");
    assert_eq!(back, reg);
    // And it stays stable: serializing the copy gives the same bytes.
    assert_eq!(serde_json::to_string(&back).unwrap(), json);

    let empty: Registry =
        serde_json::from_str(&serde_json::to_string(&Registry::default()).unwrap()).unwrap();
    assert_eq!(empty, Registry::default());
}

#[test]
fn serde_round_trip_of_commands_and_outcomes() {
    for cmd in script() {
        let json = serde_json::to_string(&cmd).unwrap();
        let back: Command = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cmd);
    }
    let outcomes = [
        Outcome::Applied { fence: None },
        Outcome::Applied {
            fence: Some(fence("v1", 4)),
        },
        Outcome::Rejected {
            reason: Rejection::AlreadyExists,
            message: "x".to_string(),
        },
    ];
    for o in outcomes {
        let back: Outcome = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}

#[test]
fn model_ref_displays_as_name_at_version() {
    assert_eq!(m("v1").to_string(), "ranker@v1");
}

// --- Audit ---

fn audit(action: &str, n: u64) -> Command {
    Command::Audit {
        entry: AuditEntry {
            at_ms: n,
            principal: "ci-bot".into(),
            role: "operator".into(),
            node: 2,
            action: action.into(),
            target: "ranker@v1".into(),
            code: "OK".into(),
            message: String::new(),
        },
    }
}

#[test]
fn audit_appends_and_changes_nothing_else() {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    let before = h.reg.clone();
    h.ok(audit("Promote", 1));
    h.ok(audit("CreateBackup", 2));
    let actions: Vec<_> = h.reg.audit.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["Promote", "CreateBackup"]);
    let mut without = h.reg.clone();
    without.audit.clear();
    assert_eq!(without, before);
}

#[test]
fn audit_keeps_the_newest_entries_within_the_bound() {
    let mut h = Harness::new();
    for n in 0..(AUDIT_RETAIN as u64 + 5) {
        h.ok(audit("Promote", n));
    }
    assert_eq!(h.reg.audit.len(), AUDIT_RETAIN);
    assert_eq!(h.reg.audit.front().map(|e| e.at_ms), Some(5));
    assert_eq!(
        h.reg.audit.back().map(|e| e.at_ms),
        Some(AUDIT_RETAIN as u64 + 4)
    );
}
