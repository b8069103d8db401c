//! `rankctl promote --bake`: waiting for the leader's verdict on a promotion's bake window.

use std::time::Duration;

use anyhow::{bail, Result};
use rankd_proto::admin::v1::{HistoryEntry, HistoryRequest};

use crate::cluster::rpc;

/// Extra time past the window's end before giving up on a verdict: the leader checks a few
/// times a second, and a leader change costs an election.
const VERDICT_GRACE: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(250);

/// A bake window as given on the command line: `60s`, `500ms`, `2m`, or `0` for none.
pub fn parse_window(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if t == "0" {
        (t, 0)
    } else {
        return Err(format!(
            "{text:?}: give a unit: 500ms, 60s or 2m (0 for no bake)"
        ));
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: not a whole number of ms, s or m"))?;
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// What ended the bake of `version`, activated at log index `index`.
pub fn verdict<'a>(
    entries: &'a [HistoryEntry],
    version: &str,
    index: u64,
) -> Option<&'a HistoryEntry> {
    entries
        .iter()
        .find(|e| e.index > index && (e.to_version == version || e.from_version == version))
}

/// Polls the history until the bake of `version` ends; fails when it was rolled back.
pub async fn wait(
    client: &mut crate::conn::Admin,
    version: &str,
    index: u64,
    until_ms: u64,
) -> Result<()> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = Duration::from_millis(until_ms.saturating_sub(now_ms));
    crate::format::note(&format!(
        "baking {version} for {:.0} s: the leader rolls back by itself if a node breaches a threshold",
        left.as_secs_f64()
    ));
    let deadline = tokio::time::Instant::now() + left + VERDICT_GRACE;
    loop {
        let history = rpc("history", client.history(HistoryRequest {}).await)?;
        if let Some(e) = verdict(&history.entries, version, index) {
            return match e.action.as_str() {
                "baked" => {
                    println!("baked {version}: {}", e.detail);
                    Ok(())
                }
                "rollback" if e.by == "bake-watch" => {
                    bail!(
                        "rolled back to {} automatically: {}",
                        e.to_version,
                        e.detail
                    )
                }
                other => bail!(
                    "the bake of {version} ended without a verdict: {other} to {} by {}",
                    e.to_version,
                    e.by
                ),
            };
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no bake verdict for {version} within {:?} of the window's end (see `rankctl history`)", VERDICT_GRACE);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_with_units_only() {
        assert_eq!(parse_window("60s"), Ok(60_000));
        assert_eq!(parse_window("500ms"), Ok(500));
        assert_eq!(parse_window("2m"), Ok(120_000));
        assert_eq!(parse_window("0"), Ok(0));
        assert!(parse_window("60").is_err());
        assert!(parse_window("-1s").is_err());
        assert!(parse_window("1.5s").is_err());
    }

    #[test]
    fn the_verdict_is_the_first_entry_after_the_promotion_about_the_version() {
        let e = |index: u64, action: &str, from: &str, to: &str| HistoryEntry {
            index,
            action: action.into(),
            from_version: from.into(),
            to_version: to.into(),
            ..Default::default()
        };
        let entries = vec![
            e(5, "promote", "1", "2"),
            e(9, "baked", "", "2"),
            e(12, "rollback", "2", "1"),
        ];
        assert_eq!(verdict(&entries, "2", 5).map(|v| v.index), Some(9));
        assert_eq!(verdict(&entries, "2", 9).map(|v| v.index), Some(12));
        assert!(verdict(&entries, "3", 5).is_none());
    }
}
