//! Every drill scenario, by name, and what each needs from its environment.

mod bad_model;
mod cluster_wide;
mod data;
mod gray;
mod process;

use super::env::DrillEnv;
use super::model::ScenarioResult;

/// Scenario names, in the order `--all` runs them: cheapest and least disruptive first,
/// then the quality faults (a slow node, a bad model), the cluster-wide outages last.
pub const ALL: [&str; 11] = [
    "follower-crash",
    "leader-crash",
    "hang",
    "partition-leader",
    "corrupt-artifact",
    "wrong-key",
    gray::NAME,
    bad_model::NAME,
    "promote-during-leader-crash",
    "full-restart",
    "restore-from-backup",
];

pub fn is_known(name: &str) -> bool {
    ALL.contains(&name)
}

/// Runs scenario `name` against `env`.
pub async fn run(name: &str, env: &mut DrillEnv) -> ScenarioResult {
    if let Some(why) = env.unsupported(name) {
        return ScenarioResult {
            name: name.into(),
            skipped: Some(why),
            ..Default::default()
        };
    }
    match name {
        "follower-crash" => process::crash(env, false).await,
        "leader-crash" => process::crash(env, true).await,
        "hang" => process::hang(env).await,
        "partition-leader" => process::partition_leader(env).await,
        "corrupt-artifact" => data::corrupt_artifact(env).await,
        "wrong-key" => data::wrong_key(env).await,
        gray::NAME => gray::gray_node(env).await,
        bad_model::NAME => bad_model::bad_model(env).await,
        "promote-during-leader-crash" => cluster_wide::promote_during_leader_crash(env).await,
        "full-restart" => cluster_wide::full_restart(env).await,
        "restore-from-backup" => match env.backups.as_ref().map(|b| b.path().to_path_buf()) {
            Some(target) => cluster_wide::restore_from_backup(env, &target).await,
            None => ScenarioResult {
                name: name.into(),
                skipped: Some("no backup target".into()),
                ..Default::default()
            },
        },
        other => ScenarioResult {
            name: other.into(),
            skipped: Some("no such scenario".into()),
            ..Default::default()
        },
    }
}
