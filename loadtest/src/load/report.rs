//! What `rankload load` prints and writes: a summary table, a compact per-second timeline,
//! and the JSON record (`spec`, `summary`, `timeline`, `calls`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};
use rankd_proto::client::ClientStats;
use rankd_proto::v1::RankRequest;
use serde::Serialize;

use super::cli::LoadArgs;
use super::record::{Call, LoadResult, Second, Window};

/// Above this many calls the JSON leaves the per-call list out (it would pass 20 MB).
const MAX_CALLS_IN_JSON: usize = 200_000;
/// The printed timeline has at most this many rows; longer runs group seconds per row.
const MAX_TIMELINE_ROWS: usize = 60;

/// The run's settings, as the JSON records them.
#[derive(Serialize)]
pub struct SpecRecord {
    addrs: Vec<String>,
    client: &'static str,
    rate: u32,
    duration_s: f64,
    deadline_ms: f64,
    hedge_ms: Option<u64>,
    query_file: String,
    query_dim: usize,
    candidates: usize,
    top_k: u32,
}

impl SpecRecord {
    pub fn new(args: &LoadArgs, request: &RankRequest) -> SpecRecord {
        SpecRecord {
            addrs: args.addrs.clone(),
            client: if args.plain {
                "plain channel"
            } else {
                "failover client"
            },
            rate: args.rate,
            duration_s: args.duration.as_secs_f64(),
            deadline_ms: args.deadline.as_secs_f64() * 1000.0,
            hedge_ms: args.hedge_ms,
            query_file: args.query_file.display().to_string(),
            query_dim: request.query.len(),
            candidates: request.candidate_ids.len(),
            top_k: args.top_k,
        }
    }
}

/// The whole run: the record's [`Window`] plus what only a whole run has.
#[derive(Serialize)]
pub struct Summary {
    #[serde(flatten)]
    window: Window,
    p999_ms: f64,
    /// From start to stop (the schedule's length).
    duration_s: f64,
    /// Calls sent, and answered successfully, per second of the run.
    sent_per_s: f64,
    ok_per_s: f64,
    /// Successful calls by model version, and by serving node.
    versions: BTreeMap<String, u64>,
    nodes: BTreeMap<String, u64>,
    /// The failover client's counters (retries, hedges, ejections, ...); absent for the
    /// plain channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_stats: Option<ClientStatsRecord>,
}

/// [`ClientStats`], which is not `Serialize` itself.
#[derive(Serialize)]
struct ClientStatsRecord {
    calls: u64,
    failures: u64,
    retries: u64,
    hedges: u64,
    failovers: u64,
    ejections: u64,
    readmissions: u64,
    cooldowns: u64,
    budget_exhausted: u64,
}

impl From<&ClientStats> for ClientStatsRecord {
    fn from(s: &ClientStats) -> Self {
        ClientStatsRecord {
            calls: s.calls,
            failures: s.failures,
            retries: s.retries,
            hedges: s.hedges,
            failovers: s.failovers,
            ejections: s.ejections,
            readmissions: s.readmissions,
            cooldowns: s.cooldowns,
            budget_exhausted: s.budget_exhausted,
        }
    }
}

pub fn summary(result: &LoadResult, stats: Option<&ClientStats>) -> Summary {
    let window = result.overall();
    let per_s = |n: u64| {
        if result.duration_s > 0.0 {
            n as f64 / result.duration_s
        } else {
            0.0
        }
    };
    let ok_calls = || result.calls.iter().filter(|c| c.ok());
    Summary {
        p999_ms: quantile_ms(&result.calls, 0.999),
        duration_s: result.duration_s,
        sent_per_s: per_s(window.sent),
        ok_per_s: per_s(window.ok),
        versions: tally(ok_calls().map(|c| &c.version)),
        nodes: tally(ok_calls().map(|c| &c.node)),
        client_stats: stats.map(ClientStatsRecord::from),
        window,
    }
}

/// The summary table and the timeline, as printed at the end of a run.
pub fn text(result: &LoadResult, stats: Option<&ClientStats>) -> String {
    let s = summary(result, stats);
    let w = &s.window;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} calls/s asked for {:.1} s through the {}",
        result.rate, s.duration_s, result.client
    );
    let _ = writeln!(out, "  sent       {:>9}   {:>9.1}/s", w.sent, s.sent_per_s);
    let _ = writeln!(out, "  ok         {:>9}   {:>9.1}/s", w.ok, s.ok_per_s);
    let failed: u64 = w.failed.values().sum();
    let _ = writeln!(out, "  failed     {failed:>9}");
    for (code, n) in &w.failed {
        let _ = writeln!(out, "    {code:<20} {n:>7}");
    }
    let _ = writeln!(
        out,
        "  latency    p50 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms",
        w.p50_ms, w.p99_ms, s.p999_ms, w.max_ms
    );
    let _ = writeln!(out, "  versions   {}", counts(&s.versions));
    let _ = writeln!(out, "  nodes      {}", counts(&s.nodes));
    if let Some(c) = &s.client_stats {
        let _ = writeln!(
            out,
            "  client     retries {}  hedges {}  failovers {}  ejections {}  budget exhausted {}",
            c.retries, c.hedges, c.failovers, c.ejections, c.budget_exhausted
        );
    }
    out.push_str(&timeline_text(result));
    out
}

/// One row per second, or per group of seconds on long runs (latencies recomputed over
/// the group, never averaged).
fn timeline_text(result: &LoadResult) -> String {
    // As `LoadResult::timeline`: second 0 to the last second with a call due.
    let seconds = result
        .calls
        .iter()
        .map(|c| c.at_us / 1_000_000 + 1)
        .max()
        .unwrap_or(0) as usize;
    let step = seconds.div_ceil(MAX_TIMELINE_ROWS).max(1) as u64;
    let mut out = format!(
        "\n{:>9} {:>7} {:>7} {:>7} {:>9} {:>9} {:>9}  versions / failures\n",
        "t (s)", "sent", "ok", "failed", "p50 ms", "p99 ms", "max ms"
    );
    for from in (0..seconds as u64).step_by(step as usize) {
        let to = (from + step).min(seconds as u64);
        let w = result.window(Duration::from_secs(from), Duration::from_secs(to));
        let in_rows = result
            .calls
            .iter()
            .filter(|c| c.ok() && (from..to).contains(&(c.at_us / 1_000_000)));
        let versions = tally(in_rows.map(|c| &c.version));
        let t = if step == 1 {
            from.to_string()
        } else {
            format!("{from}-{}", to - 1)
        };
        let failed: u64 = w.failed.values().sum();
        let mut notes = counts(&versions);
        if failed > 0 {
            let _ = write!(notes, "  {}", counts(&w.failed));
        }
        let _ = writeln!(
            out,
            "{t:>9} {:>7} {:>7} {failed:>7} {:>9.2} {:>9.2} {:>9.2}  {notes}",
            w.sent, w.ok, w.p50_ms, w.p99_ms, w.max_ms
        );
    }
    out
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    spec: SpecRecord,
    summary: Summary,
    timeline: Vec<Second>,
    /// `None` with `--no-calls` or above [`MAX_CALLS_IN_JSON`] calls.
    calls: Option<&'a [Call]>,
}

/// Writes the JSON record to `--out`, creating its directory.
pub fn write_json(
    args: &LoadArgs,
    spec: SpecRecord,
    result: &LoadResult,
    stats: Option<&ClientStats>,
) -> Result<()> {
    let keep_calls = !args.no_calls && result.calls.len() <= MAX_CALLS_IN_JSON;
    let record = JsonRecord {
        spec,
        summary: summary(result, stats),
        timeline: result.timeline(),
        calls: keep_calls.then_some(result.calls.as_slice()),
    };
    let path = &args.out;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, &record).context("encoding the record")?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// `q` of the latencies, in ms, on the same histogram as [`Window`]'s percentiles.
fn quantile_ms(calls: &[Call], q: f64) -> f64 {
    let Ok(mut hist) = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3) else {
        return 0.0;
    };
    for c in calls {
        hist.saturating_record(c.latency_us.max(1));
    }
    if hist.is_empty() {
        return 0.0;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

fn tally<'a>(names: impl Iterator<Item = &'a String>) -> BTreeMap<String, u64> {
    let mut by = BTreeMap::new();
    for name in names {
        *by.entry(name.clone()).or_insert(0) += 1;
    }
    by
}

/// `a:3 b:1`, or `-` when empty.
fn counts(by: &BTreeMap<String, u64>) -> String {
    if by.is_empty() {
        return "-".into();
    }
    let parts: Vec<String> = by.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(at_ms: u64, latency_ms: u64, code: &str, version: &str) -> Call {
        Call {
            at_us: at_ms * 1000,
            latency_us: latency_ms * 1000,
            code: code.into(),
            version: version.into(),
            node: if code == "OK" {
                "n1".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn summary_and_timeline_cover_every_call() {
        let result = LoadResult {
            rate: 2,
            duration_s: 2.0,
            client: "plain channel".into(),
            calls: vec![
                call(0, 3, "OK", "v1"),
                call(500, 5, "OK", "v2"),
                call(1000, 900, "DEADLINE_EXCEEDED", ""),
                call(1500, 4, "OK", "v2"),
            ],
        };
        let s = summary(&result, None);
        assert_eq!((s.window.sent, s.window.ok), (4, 3));
        assert_eq!(s.versions.get("v2"), Some(&2));
        assert_eq!(s.nodes.get("n1"), Some(&3));
        assert!((s.sent_per_s - 2.0).abs() < 1e-9);
        assert!((s.p999_ms - 900.0).abs() < 1.0, "{}", s.p999_ms);
        let text = text(&result, None);
        assert!(text.contains("DEADLINE_EXCEEDED"), "{text}");
        assert!(text.contains("v1:1 v2:1"), "{text}");
        let json = serde_json::to_value(&s).expect("serialises");
        assert_eq!(json["sent"], 4, "the window's fields are flattened in");
    }

    #[test]
    fn long_runs_group_seconds_per_row() {
        let calls = (0..300).map(|t| call(t * 1000, 1, "OK", "v1")).collect();
        let result = LoadResult {
            rate: 1,
            duration_s: 300.0,
            client: "plain channel".into(),
            calls,
        };
        let text = timeline_text(&result);
        // A header and 60 rows of 5 seconds each.
        assert_eq!(text.trim().lines().count(), 61, "{text}");
        assert!(text.contains("295-299"), "{text}");
    }
}
