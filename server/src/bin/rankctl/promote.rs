//! `rankctl promote | rollback | history`: switching the cluster's active version, with the
//! per-node readiness trail while a promotion is in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rankd_proto::admin::v1::{
    ClusterStatus, HistoryRequest, PromoteRequest, QuorumPolicy, RollbackRequest,
};

use crate::cluster::{cluster_status, connect, describe_error, rpc};
use crate::format::{history_table, outcome};

const POLL_EVERY: Duration = Duration::from_millis(200);
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The stored version to promote.
    version: String,
    /// The model's name; defaults to the active model's.
    #[arg(long)]
    name: Option<String>,
    /// Promote only if this version is the active one.
    #[arg(long, value_name = "CURRENT")]
    expect: Option<String>,
    /// Commit once a majority of voters is ready (the rest catch up after the switch);
    /// without it every live member must be ready.
    #[arg(long)]
    majority: bool,
    /// How long the cluster waits for readiness; 0 uses the node's ready_timeout_ms.
    #[arg(long, default_value_t = 0)]
    timeout_ms: u64,
    /// Recorded in the history.
    #[arg(long, env = "USER", default_value = "unknown")]
    requested_by: String,
    /// Bake window (e.g. 60s, 500ms, 2m; 0: none): the leader watches every node's error
    /// share, p99, golden replay and score drift for this long and rolls back by itself on
    /// a breach. Without it the node's `bake.window_ms` applies.
    #[arg(long, value_parser = crate::bake::parse_window)]
    bake: Option<u64>,
    /// Return once the promotion commits instead of waiting for the bake's verdict.
    #[arg(long)]
    no_wait: bool,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    addr: String,
}

pub async fn promote(args: PromoteArgs) -> Result<()> {
    let mut client = connect(&args.addr).await?;
    let name = match args.name {
        Some(name) => name,
        None => match cluster_status(&mut client).await?.active {
            Some(f) if !f.model_name.is_empty() => f.model_name,
            _ => bail!("no model is active yet: pass --name"),
        },
    };
    let req = PromoteRequest {
        name: name.clone(),
        version: args.version.clone(),
        expect_version: args.expect.unwrap_or_default(),
        policy: if args.majority {
            QuorumPolicy::Majority
        } else {
            QuorumPolicy::AllLive
        } as i32,
        ready_timeout_ms: args.timeout_ms,
        requested_by: args.requested_by,
        bake_ms: args.bake,
    };
    crate::format::note(&format!("promoting {name} {} ...", args.version));
    let mut trail = Trail::new(&name, &args.version);
    let start = Instant::now();
    let res = {
        let mut caller = client.clone();
        let call = caller.promote(req);
        let watch = trail.follow(client.clone());
        tokio::pin!(call, watch);
        tokio::select! {
            biased;
            res = &mut call => res,
            () = &mut watch => call.await,
        }
    };
    let elapsed = start.elapsed();
    // The stages reached between the last poll and the answer, or the stage that failed it.
    let settled = match &res {
        Ok(_) => true,
        Err(s) => s.code() == tonic::Code::FailedPrecondition,
    };
    if settled {
        trail.poll(&mut client).await;
    }
    match res {
        Ok(resp) => {
            let resp = resp.into_inner();
            if crate::format::json_output() {
                return crate::format::print_json(&resp);
            }
            print!("{}", outcome("promoted", &resp, elapsed));
            match (&resp.fence, resp.bake_until_ms) {
                (Some(f), until) if until > 0 && !args.no_wait => {
                    crate::bake::wait(&mut client, &args.version, f.index, until).await
                }
                _ => Ok(()),
            }
        }
        Err(status) => bail!("{}", describe_error("promote", &status)),
    }
}

pub async fn rollback(addr: &str, expect: Option<String>, requested_by: String) -> Result<()> {
    let req = RollbackRequest {
        expect_version: expect.unwrap_or_default(),
        requested_by,
    };
    let start = Instant::now();
    let resp = rpc("rollback", connect(addr).await?.rollback(req).await)?;
    if crate::format::json_output() {
        return crate::format::print_json(&resp);
    }
    print!("{}", outcome("rolled back to", &resp, start.elapsed()));
    Ok(())
}

/// Promotions and rollbacks; with `audit`, every admin action instead.
pub async fn history(addr: &str, audit: bool) -> Result<()> {
    let resp = rpc(
        "history",
        connect(addr).await?.history(HistoryRequest {}).await,
    )?;
    match (audit, crate::format::json_output()) {
        (false, true) => crate::format::print_json(&resp.entries),
        (true, true) => crate::format::print_json(&resp.audit),
        (false, false) => {
            print!("{}", history_table(&resp.entries));
            Ok(())
        }
        (true, false) => {
            print!("{}", crate::format::audit_table(&resp.audit));
            Ok(())
        }
    }
}

/// The stages each node last reported for one version, to print only what changed.
struct Trail {
    name: String,
    version: String,
    seen: BTreeMap<u64, (String, String)>,
    last_error: Option<String>,
}

impl Trail {
    fn new(name: &str, version: &str) -> Trail {
        Trail {
            name: name.to_string(),
            version: version.to_string(),
            seen: BTreeMap::new(),
            last_error: None,
        }
    }

    /// Polls the cluster status until dropped (the caller drops it when the RPC returns).
    async fn follow(&mut self, mut client: crate::conn::Admin) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.poll(&mut client).await;
        }
    }

    async fn poll(&mut self, client: &mut crate::conn::Admin) {
        match tokio::time::timeout(POLL_TIMEOUT, cluster_status(client)).await {
            Ok(Ok(status)) => {
                self.last_error = None;
                for line in self.changes(&status) {
                    crate::format::note(&line);
                }
            }
            // A failing poll does not fail the promotion; say so once per distinct error.
            Ok(Err(e)) => self.note_error(format!("{e:#}")),
            Err(_) => self.note_error("cluster status timed out".to_string()),
        }
    }

    fn note_error(&mut self, msg: String) {
        if self.last_error.as_deref() != Some(msg.as_str()) {
            eprintln!("(status poll: {})", msg.replace('\n', "; "));
            self.last_error = Some(msg);
        }
    }

    /// One line per node whose stage (or its detail) for the version changed.
    fn changes(&mut self, status: &ClusterStatus) -> Vec<String> {
        let mut lines = Vec::new();
        for node in &status.nodes {
            let Some(st) = node
                .stages
                .iter()
                .find(|st| st.name == self.name && st.version == self.version)
            else {
                continue;
            };
            let now = (st.stage.clone(), st.detail.clone());
            if self.seen.get(&node.id) == Some(&now) {
                continue;
            }
            lines.push(if st.detail.is_empty() {
                format!("node {}: {}", node.id, st.stage)
            } else {
                format!("node {}: {} ({})", node.id, st.stage, st.detail)
            });
            self.seen.insert(node.id, now);
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rankd_proto::admin::v1::{NodeStatus, VersionStage};

    fn node(id: u64, stages: &[(&str, &str, &str, &str)]) -> NodeStatus {
        NodeStatus {
            id,
            stages: stages
                .iter()
                .map(|(n, v, s, d)| VersionStage {
                    name: n.to_string(),
                    version: v.to_string(),
                    stage: s.to_string(),
                    detail: d.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn status(nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus {
            nodes,
            ..Default::default()
        }
    }

    #[test]
    fn trail_prints_only_changes_for_the_version() {
        let mut t = Trail::new("demo", "2");
        let s = status(vec![
            node(
                1,
                &[("demo", "1", "ready", ""), ("demo", "2", "fetching", "")],
            ),
            node(2, &[("other", "2", "loading", "")]),
        ]);
        assert_eq!(t.changes(&s), vec!["node 1: fetching"]);
        assert!(t.changes(&s).is_empty());
        let s = status(vec![
            node(1, &[("demo", "2", "loading", "")]),
            node(2, &[("demo", "2", "failed", "checksum mismatch")]),
        ]);
        assert_eq!(
            t.changes(&s),
            vec!["node 1: loading", "node 2: failed (checksum mismatch)"]
        );
        let s = status(vec![node(1, &[("demo", "2", "ready", "")])]);
        assert_eq!(t.changes(&s), vec!["node 1: ready"]);
    }
}
