//! The drill report as Markdown: a summary table (one row per scenario), a section per
//! scenario with its chart, the availability estimate and how to reproduce.
//!
//! Everything iterates vectors and `BTreeMap`s, so the same report renders byte for byte
//! the same text.

use std::fmt::Write as _;

use crate::drill::model::{DrillReport, ScenarioResult};
use crate::load::record::Window;

use super::{availability, objectives};

/// The result column. A scenario that ran but carries no objective check at all reads
/// NOT CHECKED rather than PASS: an empty list would otherwise pass vacuously.
pub fn verdict(s: &ScenarioResult) -> &'static str {
    if s.skipped.is_some() {
        "SKIPPED"
    } else if s.objectives.is_empty() {
        "NOT CHECKED"
    } else if s.passed() {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The whole document. `charts[i]` is the relative link of scenario `i`'s chart, if it has
/// one (skipped scenarios have none).
pub fn render(report: &DrillReport, charts: &[Option<String>]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# rankd disaster-recovery drill — {}\n",
        cell(&report.date)
    );
    let _ = writeln!(md, "- Machine: {}", cell(&report.machine));
    let _ = writeln!(md, "- Target: {}", cell(&report.target));
    let _ = writeln!(md, "- Load: {} calls/s, steady, open loop", report.rate);
    let count = |v: &str| report.scenarios.iter().filter(|s| verdict(s) == v).count();
    let _ = writeln!(
        md,
        "- Result: **{}** — {} pass, {} fail, {} skipped{}\n",
        if overall_pass(report) { "PASS" } else { "FAIL" },
        count("PASS"),
        count("FAIL"),
        count("SKIPPED"),
        match count("NOT CHECKED") {
            0 => String::new(),
            n => format!(", {n} not checked"),
        },
    );

    let o = &report.objectives;
    md.push_str("## Objectives\n\nEach scenario that runs must meet every one:\n\n");
    let _ = writeln!(
        md,
        "- failed requests over the scenario ≤ {}",
        o.max_failed_requests
    );
    let _ = writeln!(
        md,
        "- RTO (fault to every node SERVING the agreed version) ≤ {:.0} ms; a scenario that \
         never recovers fails it",
        o.max_rto_ms
    );
    let own: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| s.skipped.is_none())
        .filter_map(|s| {
            s.rto_limit_ms
                .map(|ms| format!("{} ≤ {ms:.0} ms", cell(&s.name)))
        })
        .collect();
    if !own.is_empty() {
        let _ = writeln!(
            md,
            "- RTO limits of their own, in place of the one above: {}",
            own.join(", ")
        );
    }
    let _ = writeln!(md, "- RPO: acknowledged promotions lost ≤ {}\n", o.max_rpo);

    md.push_str("## Summary\n\n");
    md.push_str(
        "| scenario | fault | detection (ms) | RTO (ms) | failed requests | RPO (lost acked \
         promotions) | divergence window | p50 ms before / during / after | p99 ms before / \
         during / after | max ms before / during / after | result |\n",
    );
    md.push_str("|---|---|--:|--:|---|--:|--:|---|---|---|---|\n");
    for s in &report.scenarios {
        summary_row(&mut md, s);
    }
    md.push('\n');

    for (i, s) in report.scenarios.iter().enumerate() {
        scenario_section(&mut md, s, charts.get(i).and_then(|c| c.as_deref()));
    }

    md.push_str(&availability::markdown(
        &report.availability,
        &report.scenarios,
    ));
    md.push_str(
        "\n## How to reproduce\n\n`make drill` (or `rankload drill --all`) on a machine like \
         the one above.\n",
    );
    md
}

/// Every scenario passed or was skipped (a scenario never checked is not a pass).
pub fn overall_pass(report: &DrillReport) -> bool {
    report
        .scenarios
        .iter()
        .all(|s| matches!(verdict(s), "PASS" | "SKIPPED"))
}

fn summary_row(md: &mut String, s: &ScenarioResult) {
    let name = cell(&s.name);
    if let Some(why) = &s.skipped {
        let _ = writeln!(
            md,
            "| {name} | {} | — | — | — | — | — | — | — | — | SKIPPED: {} |",
            cell(&s.fault),
            cell(why)
        );
        return;
    }
    let _ = writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        cell(&s.fault),
        opt_ms(s.detection_ms),
        s.rto_ms
            .map(|ms| format!("{ms:.0}"))
            .unwrap_or_else(|| "never recovered".into()),
        cell(&failed_cell(s)),
        s.rpo_lost_promotions,
        s.divergence_ms
            .map(|ms| format!("{ms:.0} ms"))
            .unwrap_or_else(|| "none seen".into()),
        triple(s, |w| w.p50_ms),
        triple(s, |w| w.p99_ms),
        triple(s, |w| w.max_ms),
        verdict(s),
    );
}

fn scenario_section(md: &mut String, s: &ScenarioResult, chart: Option<&str>) {
    let _ = writeln!(md, "## {} — {}\n", cell(&s.name), verdict(s));
    if !s.fault.is_empty() {
        let _ = writeln!(md, "- Fault: {}", cell(&s.fault));
    }
    if !s.isolation.is_empty() {
        let _ = writeln!(md, "- Isolation: {}", cell(&s.isolation));
    }
    if let Some(why) = &s.skipped {
        let _ = writeln!(md, "- Not run: {}\n", cell(why));
        return;
    }
    if s.outage_expected {
        md.push_str("- Whole-service outage on purpose: failed requests are reported, not gated\n");
    }
    let _ = writeln!(
        md,
        "- Fault from {:.1} s to {:.1} s of the load; {} calls sent, {} failed",
        s.fault_start_s,
        s.fault_end_s,
        s.sent,
        s.failed()
    );
    if !s.notes.is_empty() {
        md.push_str("\nNotes:\n\n");
        for n in &s.notes {
            let _ = writeln!(md, "- {}", cell(n));
        }
    }
    if !s.objectives.is_empty() {
        md.push_str("\nObjectives:\n\n");
        for o in &s.objectives {
            let _ = writeln!(
                md,
                "- {} {}: {}; limit {}",
                if o.held { "held —" } else { "**MISSED** —" },
                cell(&o.what),
                cell(&o.measured),
                cell(&o.limit)
            );
        }
    }
    if let Some(link) = chart {
        let _ = writeln!(md, "\n![{} timeline]({link})", cell(&s.name));
    }
    md.push('\n');
}

fn failed_cell(s: &ScenarioResult) -> String {
    let text = objectives::failed_text(s);
    if s.outage_expected {
        format!("{text}, outage expected")
    } else {
        text
    }
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|ms| format!("{ms:.0}")).unwrap_or_else(|| "—".into())
}

/// "2.1 / 180.0 / 3.0" for one latency figure before, during and after the fault.
fn triple(s: &ScenarioResult, f: impl Fn(&Window) -> f64) -> String {
    let one = |w: &Window| {
        if w.sent == 0 {
            "—".to_string()
        } else {
            format!("{:.1}", f(w))
        }
    };
    format!(
        "{} / {} / {}",
        one(&s.before),
        one(&s.during),
        one(&s.after)
    )
}

/// Text safe inside a table cell or a list item: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace(['\n', '\r'], " ").replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_markdown_cells_are_one_line_and_pipe_safe() {
        assert_eq!(cell("a | b\nc"), "a \\| b c");
    }

    #[test]
    fn report_markdown_unchecked_scenario_is_not_a_pass() {
        let s = ScenarioResult::default();
        assert_eq!(verdict(&s), "NOT CHECKED");
        let report = DrillReport {
            machine: String::new(),
            date: String::new(),
            target: String::new(),
            rate: 0,
            objectives: Default::default(),
            availability: crate::drill::model::AvailabilityInputs {
                failures_per_node_year: 12.0,
                replicas: 3,
            },
            scenarios: vec![s],
        };
        assert!(!overall_pass(&report));
    }
}
