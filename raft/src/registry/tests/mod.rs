//! Unit tests for the registry state machine: every command's accepted and rejected paths,
//! the no-change-on-rejection and determinism invariants, and the serde round trip a
//! snapshot relies on.

use super::*;

const TERM: u64 = 3;

fn m(version: &str) -> ModelRef {
    ModelRef::new("ranker", version)
}

fn info(version: &str, plaintext: &str, origin: NodeId) -> VersionInfo {
    VersionInfo {
        model: m(version),
        sha256: format!("sealed-{version}-{plaintext}"),
        plaintext_sha256: plaintext.to_string(),
        size: 1024,
        key_id: "key-1".to_string(),
        uploaded_by: "alice".to_string(),
        uploaded_at: 1_700_000_000,
        origin,
        retired: false,
        lineage: None,
    }
}

fn register(version: &str, origin: NodeId) -> Command {
    Command::Register {
        info: info(version, &format!("pt-{version}"), origin),
    }
}

fn ready(node: NodeId, version: &str) -> Command {
    Command::ReportReady {
        node,
        model: m(version),
    }
}

fn failed(node: NodeId, version: &str, reason: &str) -> Command {
    Command::ReportFailed {
        node,
        model: m(version),
        reason: reason.to_string(),
    }
}

fn promote(version: &str, expect: Option<&str>, required: &[NodeId]) -> Command {
    Command::Promote {
        model: m(version),
        expect: expect.map(m),
        required: required.to_vec(),
        by: "bob".to_string(),
        at_ms: 1_700_000_000_123,
        bake_ms: 0,
    }
}

fn rollback(expect: Option<&str>) -> Command {
    Command::Rollback {
        required: vec![],
        expect: expect.map(m),
        by: "carol".to_string(),
        at_ms: 1_700_000_999_000,
    }
}

fn retire(version: &str) -> Command {
    Command::Retire { model: m(version) }
}

fn fence(version: &str, index: u64) -> Fence {
    Fence {
        model: m(version),
        term: TERM,
        index,
    }
}

/// A registry that applies commands at consecutive log indexes, like a follower would.
struct Harness {
    reg: Registry,
    next: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            reg: Registry::default(),
            next: 1,
        }
    }

    /// Applies `cmd` at the next index and returns the outcome.
    fn apply(&mut self, cmd: Command) -> Outcome {
        let index = self.next;
        self.next += 1;
        self.reg.apply(TERM, index, &cmd)
    }

    /// Applies `cmd` and asserts it was applied with no fence.
    fn ok(&mut self, cmd: Command) {
        let desc = format!("{cmd:?}");
        assert_eq!(self.apply(cmd), Outcome::Applied { fence: None }, "{desc}");
    }

    /// Applies `cmd` and asserts it was applied with a fence; returns the fence.
    fn fenced(&mut self, cmd: Command) -> Fence {
        match self.apply(cmd) {
            Outcome::Applied { fence: Some(f) } => f,
            other => panic!("expected an applied fence, got {other:?}"),
        }
    }

    /// Applies `cmd`, asserts it was rejected for `reason` and changed nothing; returns the
    /// message.
    fn rejected(&mut self, cmd: Command, reason: Rejection) -> String {
        let before = self.reg.clone();
        let out = self.apply(cmd);
        assert_eq!(self.reg, before, "a rejected command changed the registry");
        match out {
            Outcome::Rejected { reason: r, message } => {
                assert_eq!(r, reason, "message: {message}");
                message
            }
            other => panic!("expected a {reason:?} rejection, got {other:?}"),
        }
    }
}

/// v1 and v2 registered, both ready on nodes 1 and 2, v1 promoted at index 5.
fn with_v1_active() -> Harness {
    let mut h = Harness::new();
    h.ok(register("v1", 1));
    h.ok(register("v2", 1));
    h.ok(ready(1, "v1"));
    h.ok(ready(2, "v1"));
    assert_eq!(h.fenced(promote("v1", None, &[1, 2])), fence("v1", 5));
    h.ok(ready(1, "v2"));
    h.ok(ready(2, "v2"));
    h
}

/// As [`with_v1_active`], then v2 promoted at index 8: active v2, previous v1.
fn with_v2_active() -> Harness {
    let mut h = with_v1_active();
    assert_eq!(h.fenced(promote("v2", None, &[1, 2])), fence("v2", 8));
    h
}

mod activation;
mod bake;
mod lifecycle;
