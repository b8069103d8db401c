//! Raft timing, validated before a node starts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Timing of consensus.
///
/// openraft 0.9 lets a follower that has seen a committed leader start an election only
/// after the leader's lease (`election_timeout_max_ms`) *plus* a random election timeout
/// (`min..max`) without a heartbeat. The defaults therefore re-elect within 650–800 ms of
/// the old leader going silent, plus one vote round trip: under the 1 s target on loopback,
/// while a leader still has three heartbeats (240 ms) before any follower could doubt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTiming {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Connecting to a peer gives up after this long.
    pub connect_timeout_ms: u64,
    /// Any one Raft RPC (other than a snapshot transfer) gives up after this long.
    pub rpc_timeout_ms: u64,
    /// Build a snapshot (and purge the log behind it) after this many applied entries.
    pub snapshot_every: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval_ms: 80,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 400,
            connect_timeout_ms: 500,
            rpc_timeout_ms: 1000,
            snapshot_every: 500,
        }
    }
}

/// A timing combination that would make the cluster flap or stall.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("raft.{field} must be greater than 0")]
    Zero { field: &'static str },
    #[error(
        "raft.heartbeat_interval_ms ({heartbeat}) must be at most a third of \
         raft.election_timeout_min_ms ({election_min}): with fewer heartbeats per election \
         timeout, one delayed heartbeat starts a needless election"
    )]
    HeartbeatTooSlow { heartbeat: u64, election_min: u64 },
    #[error(
        "raft.election_timeout_max_ms ({max}) must be greater than raft.election_timeout_min_ms \
         ({min}): equal timeouts make candidates split the vote again and again"
    )]
    ElectionRange { min: u64, max: u64 },
    #[error(
        "raft.rpc_timeout_ms ({rpc}) must be at least raft.heartbeat_interval_ms ({heartbeat})"
    )]
    RpcTimeout { rpc: u64, heartbeat: u64 },
}

impl RaftTiming {
    pub fn validate(&self) -> Result<(), TimingError> {
        for (field, value) in [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("election_timeout_min_ms", self.election_timeout_min_ms),
            ("election_timeout_max_ms", self.election_timeout_max_ms),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("rpc_timeout_ms", self.rpc_timeout_ms),
            ("snapshot_every", self.snapshot_every),
        ] {
            if value == 0 {
                return Err(TimingError::Zero { field });
            }
        }
        if self.heartbeat_interval_ms * 3 > self.election_timeout_min_ms {
            return Err(TimingError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval_ms,
                election_min: self.election_timeout_min_ms,
            });
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(TimingError::ElectionRange {
                min: self.election_timeout_min_ms,
                max: self.election_timeout_max_ms,
            });
        }
        if self.rpc_timeout_ms < self.heartbeat_interval_ms {
            return Err(TimingError::RpcTimeout {
                rpc: self.rpc_timeout_ms,
                heartbeat: self.heartbeat_interval_ms,
            });
        }
        Ok(())
    }

    /// The openraft configuration for this timing.
    pub fn openraft_config(&self, cluster_name: &str) -> Result<openraft::Config, String> {
        openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.rpc_timeout_ms * 10,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            // Followers that fall further behind than this get the snapshot instead.
            max_in_snapshot_log_to_keep: self.snapshot_every.min(64),
            ..Default::default()
        }
        .validate()
        .map_err(|e| e.to_string())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_build_an_openraft_config() {
        let t = RaftTiming::default();
        assert_eq!(t.validate(), Ok(()));
        assert!(t.openraft_config("test").is_ok());
    }

    #[test]
    fn unsafe_timing_is_refused() {
        let slow_heartbeat = RaftTiming {
            heartbeat_interval_ms: 100,
            ..RaftTiming::default()
        };
        assert!(matches!(
            slow_heartbeat.validate(),
            Err(TimingError::HeartbeatTooSlow { .. })
        ));
        let equal = RaftTiming {
            election_timeout_max_ms: 250,
            ..RaftTiming::default()
        };
        assert!(matches!(
            equal.validate(),
            Err(TimingError::ElectionRange { .. })
        ));
        let zero = RaftTiming {
            rpc_timeout_ms: 0,
            ..RaftTiming::default()
        };
        assert_eq!(
            zero.validate(),
            Err(TimingError::Zero {
                field: "rpc_timeout_ms"
            })
        );
    }
}
