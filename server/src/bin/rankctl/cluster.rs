//! `rankctl cluster init | add-node | remove-node | status`: membership of the replicated
//! registry, and the helpers the other cluster commands (promote.rs) share.

use anyhow::{bail, Result};
use clap::Subcommand;
use rankd_proto::admin::v1::{
    AddNodeRequest, ClusterMember, ClusterStatus, ClusterStatusRequest, InitClusterRequest,
    RemoveNodeRequest,
};

use crate::format::{render_status, status_json};

/// Where a follower that cannot forward a write says the leader is.
const LEADER_METADATA: &str = "rankd-leader";

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Make the listed nodes (the addressed one included) the first voters. Once per cluster.
    Init {
        /// A first voter, as ID=API_ADDR,PEER_ADDR, e.g. 1=127.0.0.1:50051,127.0.0.1:50061.
        /// Repeat for each member.
        #[arg(long = "member", value_name = "ID=API_ADDR,PEER_ADDR", required = true, value_parser = parse_member)]
        members: Vec<ClusterMember>,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Add a node as a learner (or, with --voter, make it a voter once it has caught up).
    AddNode {
        #[arg(long)]
        id: u64,
        /// The node's client API address (the Ranker and Admin services).
        #[arg(long)]
        api: String,
        /// The node's peer address (Raft and artifact replication).
        #[arg(long)]
        peer: String,
        #[arg(long)]
        voter: bool,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Remove a node from the cluster; its id is never accepted again.
    RemoveNode {
        #[arg(long)]
        id: u64,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
    /// Print every member's role, Raft progress, versions and health.
    Status {
        /// Print the whole response as JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        addr: String,
    },
}

pub async fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Init { members, addr } => {
            check_unique(&members)?;
            let req = InitClusterRequest { members };
            let status = rpc(
                "cluster init",
                connect(&addr).await?.init_cluster(req).await,
            )?;
            show("cluster initialised", &status)?;
        }
        ClusterCommand::AddNode {
            id,
            api,
            peer,
            voter,
            addr,
        } => {
            let member = member(id, &api, &peer).map_err(anyhow::Error::msg)?;
            let req = AddNodeRequest {
                member: Some(member),
                voter,
            };
            let status = rpc("add-node", connect(&addr).await?.add_node(req).await)?;
            let kind = if voter { "voter" } else { "learner" };
            show(&format!("node {id} added as a {kind}"), &status)?;
        }
        ClusterCommand::RemoveNode { id, addr } => {
            let req = RemoveNodeRequest { id };
            let status = rpc("remove-node", connect(&addr).await?.remove_node(req).await)?;
            show(&format!("node {id} removed"), &status)?;
        }
        ClusterCommand::Status { json, addr } => {
            let status = cluster_status(&mut connect(&addr).await?).await?;
            if json || crate::format::json_output() {
                println!("{}", serde_json::to_string_pretty(&status_json(&status))?);
            } else {
                print!("{}", render_status(&status));
            }
        }
    }
    Ok(())
}

/// What happened, then the cluster status: a table, or the status as JSON with `-o json`.
fn show(what: &str, status: &ClusterStatus) -> Result<()> {
    crate::format::note(what);
    if crate::format::json_output() {
        println!("{}", serde_json::to_string_pretty(&status_json(status))?);
    } else {
        print!("{}", render_status(status));
    }
    Ok(())
}

/// Connects to a node's Admin service (see `conn` for TLS and the token).
pub async fn connect(addr: &str) -> Result<crate::conn::Admin> {
    crate::conn::admin(addr).await
}

pub async fn cluster_status(client: &mut crate::conn::Admin) -> Result<ClusterStatus> {
    rpc(
        "cluster status",
        client.get_cluster_status(ClusterStatusRequest {}).await,
    )
}

/// The response's message, or an error naming the call, the gRPC code and message, and the
/// leader's address when the node sent one.
pub fn rpc<T>(what: &str, res: Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    match res {
        Ok(resp) => Ok(resp.into_inner()),
        Err(status) => bail!("{}", describe_error(what, &status)),
    }
}

pub fn describe_error(what: &str, status: &tonic::Status) -> String {
    let mut msg = format!("{what} failed: {:?}: {}", status.code(), status.message());
    if let Some(leader) = status
        .metadata()
        .get(LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        msg.push_str(&format!(
            "\nleader is at {leader} (retry with --addr {leader})"
        ));
    }
    msg
}

/// `1=127.0.0.1:50051,127.0.0.1:50061` → member 1 with that API and peer address.
pub fn parse_member(s: &str) -> Result<ClusterMember, String> {
    let (id, addrs) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=API_ADDR,PEER_ADDR, got {s:?}"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("bad node id {:?} in {s:?}", id.trim()))?;
    let (api, peer) = addrs
        .split_once(',')
        .ok_or_else(|| format!("expected API_ADDR,PEER_ADDR after {id}=, got {addrs:?}"))?;
    member(id, api, peer)
}

fn member(id: u64, api: &str, peer: &str) -> Result<ClusterMember, String> {
    let (api, peer) = (api.trim(), peer.trim());
    for (what, a) in [("API", api), ("peer", peer)] {
        if a.is_empty() || a.contains(',') || a.chars().any(char::is_whitespace) {
            return Err(format!("bad {what} address {a:?} for node {id}"));
        }
    }
    Ok(ClusterMember {
        id,
        api_addr: api.to_string(),
        peer_addr: peer.to_string(),
    })
}

fn check_unique(members: &[ClusterMember]) -> Result<()> {
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.id == m.id) {
            bail!("node id {} is listed twice", m.id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members() {
        let m = parse_member("1=127.0.0.1:50051,127.0.0.1:50061").unwrap();
        assert_eq!(m.id, 1);
        assert_eq!(m.api_addr, "127.0.0.1:50051");
        assert_eq!(m.peer_addr, "127.0.0.1:50061");
        let m = parse_member(" 12 = http://a:1 , b:2 ").unwrap();
        assert_eq!(
            (m.id, m.api_addr.as_str(), m.peer_addr.as_str()),
            (12, "http://a:1", "b:2")
        );
        for bad in [
            "", "1", "x=a,b", "1=a", "1=a,", "1=,b", "1=a,b,c", "-1=a,b", "1=a b,c",
        ] {
            assert!(parse_member(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_duplicate_members() {
        let a = parse_member("1=a:1,a:2").unwrap();
        let b = parse_member("2=b:1,b:2").unwrap();
        assert!(check_unique(&[a.clone(), b.clone()]).is_ok());
        assert!(check_unique(&[a.clone(), b, a]).is_err());
    }

    #[test]
    fn leader_hint_is_reported() {
        let mut s = tonic::Status::unavailable("not the leader");
        s.metadata_mut()
            .insert(LEADER_METADATA, "127.0.0.1:50052".parse().unwrap());
        let msg = describe_error("promote", &s);
        assert!(msg.starts_with("promote failed: Unavailable: not the leader"));
        assert!(msg.contains("leader is at 127.0.0.1:50052"));
        let plain = describe_error("promote", &tonic::Status::not_found("no such version"));
        assert_eq!(plain, "promote failed: NotFound: no such version");
    }
}
