//! Availability estimate from the drill's measured recovery times.
//!
//! The classic steady-state model: each node fails at rate λ (failures per node-year, a
//! configured guess since a drill cannot measure it) and is repaired in MTTR, so one node is
//! up a fraction `A₁ = MTBF / (MTBF + MTTR)` of the time with `MTBF = 1/λ`. With N replicas
//! behind a failover client the service is up while at least one replica is up, so with
//! independent failures `A_N = 1 − (1 − A₁)^N`.
//!
//! **MTTR is the longest RTO measured**, not the mean. The scenarios are not weighted by how
//! often each fault happens in production, so a mean over them is not an expected repair time
//! anyway; the longest bounds every failure mode the drill exercised, which errs on the side
//! of a lower availability figure. The mean is shown beside it for context.
//!
//! Scenarios with `outage_expected` (every node taken down on purpose: full restart, restore
//! from backup) are left out of MTTR: they are correlated failures of all replicas at once,
//! which the parallel model excludes by construction. Their RTOs are listed beside the
//! estimate instead, since they are what such an event would cost. Scenarios marked
//! `every_replica` (a bad version promoted everywhere) are left out and listed the same way:
//! the service stays up, but the fault is on every replica at once.
//!
//! Unavailabilities (`1 − A`) are computed directly rather than as `1 − A`: with three
//! replicas they are ~1e-18, far below what an `f64` near 1.0 can hold.

use std::fmt::Write as _;

use crate::drill::model::{AvailabilityInputs, ScenarioResult};

/// Julian year, the usual basis for "downtime per year".
pub const SECONDS_PER_YEAR: f64 = 365.25 * 24.0 * 3600.0;

/// One configuration's figures (a single node, or N replicas).
#[derive(Debug, Clone, PartialEq)]
pub struct Level {
    pub replicas: u32,
    /// `1 − A`.
    pub unavailability: f64,
    pub availability: f64,
    /// `−log10(1 − A)`; infinite when the unavailability is zero.
    pub nines: f64,
    /// Expected downtime per year, in seconds.
    pub downtime_s_per_year: f64,
}

/// The estimate and where its MTTR came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Availability {
    pub failures_per_node_year: f64,
    pub mtbf_hours: f64,
    /// MTTR used: the longest measured RTO, in ms.
    pub mttr_ms: f64,
    /// The scenario that measured it.
    pub mttr_scenario: String,
    /// Mean of the measured RTOs, for context only.
    pub mean_rto_ms: f64,
    /// Scenarios that measured an RTO.
    pub measured: usize,
    /// Scenarios that ran but never recovered: left out of MTTR (see the Markdown note).
    pub unrecovered: Vec<String>,
    /// Whole-service outages on purpose, with their RTO in ms where measured: left out of
    /// MTTR (see the module doc).
    pub whole_outages: Vec<(String, Option<f64>)>,
    /// Faults on every replica at once with the service up (`every_replica`), with their RTO
    /// in ms where measured: left out of MTTR too.
    pub every_replica: Vec<(String, Option<f64>)>,
    pub single: Level,
    pub cluster: Level,
}

/// The figures for one node repeated in `replicas` independent copies.
pub fn level(failures_per_node_year: f64, mttr_s: f64, replicas: u32) -> Level {
    let mtbf_s = SECONDS_PER_YEAR / failures_per_node_year;
    // λ = 0 gives MTBF = ∞ and a single-node unavailability of exactly 0.
    let u1 = mttr_s / (mtbf_s + mttr_s);
    let unavailability = u1.powi(replicas.min(i32::MAX as u32) as i32);
    Level {
        replicas,
        unavailability,
        availability: 1.0 - unavailability,
        nines: -unavailability.log10(),
        downtime_s_per_year: unavailability * SECONDS_PER_YEAR,
    }
}

/// The estimate, or why there is none (no RTO measured, invalid inputs).
pub fn estimate(
    inputs: &AvailabilityInputs,
    scenarios: &[ScenarioResult],
) -> Result<Availability, String> {
    let lambda = inputs.failures_per_node_year;
    if !lambda.is_finite() || lambda < 0.0 {
        return Err(format!("invalid failure rate λ = {lambda} per node-year"));
    }
    if inputs.replicas == 0 {
        return Err("no replicas configured".into());
    }
    let ran = scenarios.iter().filter(|s| s.skipped.is_none());
    let mut rtos: Vec<(&str, f64)> = Vec::new();
    let mut unrecovered = Vec::new();
    let mut whole_outages = Vec::new();
    let mut every_replica = Vec::new();
    for s in ran {
        if s.outage_expected {
            whole_outages.push((s.name.clone(), s.rto_ms.filter(|ms| ms.is_finite())));
            continue;
        }
        if s.every_replica {
            every_replica.push((s.name.clone(), s.rto_ms.filter(|ms| ms.is_finite())));
            continue;
        }
        match s.rto_ms {
            Some(ms) if ms.is_finite() && ms >= 0.0 => rtos.push((&s.name, ms)),
            _ => unrecovered.push(s.name.clone()),
        }
    }
    // First scenario wins a tie, so the text is the same run after run.
    let Some((name, max)) = rtos
        .iter()
        .copied()
        .reduce(|best, x| if x.1 > best.1 { x } else { best })
    else {
        return Err(
            "no single-failure scenario measured an RTO, so there is no MTTR to estimate from"
                .into(),
        );
    };
    let mttr_s = max / 1000.0;
    Ok(Availability {
        failures_per_node_year: lambda,
        mtbf_hours: SECONDS_PER_YEAR / lambda / 3600.0,
        mttr_ms: max,
        mttr_scenario: name.to_string(),
        mean_rto_ms: rtos.iter().map(|r| r.1).sum::<f64>() / rtos.len() as f64,
        measured: rtos.len(),
        unrecovered,
        whole_outages,
        every_replica,
        single: level(lambda, mttr_s, 1),
        cluster: level(lambda, mttr_s, inputs.replicas),
    })
}

/// The "Availability estimate" section: inputs, formula, the figures, the assumptions.
pub fn markdown(inputs: &AvailabilityInputs, scenarios: &[ScenarioResult]) -> String {
    let mut md = String::from("## Availability estimate\n\n");
    let a = match estimate(inputs, scenarios) {
        Ok(a) => a,
        Err(why) => {
            let _ = writeln!(md, "Not estimated: {why}.");
            return md;
        }
    };
    let _ = writeln!(
        md,
        "Inputs: λ = {} failures per node-year (configured; MTBF = {:.1} h), N = {} replicas, \
         MTTR = {} — the **longest** RTO measured (`{}`), over {} scenario(s) that measured one \
         (mean {}). The longest rather than the mean: the scenarios are not weighted by how \
         often each fault happens, and the longest bounds every failure mode drilled, so the \
         estimate errs low.\n",
        a.failures_per_node_year,
        a.mtbf_hours,
        inputs.replicas,
        fmt_duration(a.mttr_ms / 1000.0),
        a.mttr_scenario,
        a.measured,
        fmt_duration(a.mean_rto_ms / 1000.0),
    );
    md.push_str(
        "```text\nMTBF = 1 / λ\nA₁   = MTBF / (MTBF + MTTR)\n\
         A_N  = 1 − (1 − A₁)^N        (up while at least one replica is up)\n\
         nines = −log₁₀(1 − A)\ndowntime per year = (1 − A) × 365.25 days\n```\n\n",
    );
    md.push_str(
        "| configuration | availability | unavailability (1 − A) | nines | expected downtime per year |\n\
         |---|---|---|---|---|\n",
    );
    for (what, l) in [("single node", &a.single), ("cluster", &a.cluster)] {
        let _ = writeln!(
            md,
            "| {what} ({} replica{}) | {} | {:.3e} | {} | {} |",
            l.replicas,
            if l.replicas == 1 { "" } else { "s" },
            fmt_availability(l),
            l.unavailability,
            fmt_nines(l.nines),
            fmt_duration(l.downtime_s_per_year),
        );
    }
    md.push_str(
        "\nAssumes independent node failures and a failover that costs no downtime (the \
         failed-requests objective checks the latter); correlated failures (a shared rack, \
         a bad release rolled to every node) are outside this model.\n",
    );
    if !a.whole_outages.is_empty() {
        let list = rto_list(&a.whole_outages);
        let _ = writeln!(
            md,
            "\n**Whole-service outages, not in MTTR**: {}. Every replica down at once is the \
             correlated failure this model leaves out; each RTO is what one such event costs.",
            list.join(", ")
        );
    }
    if !a.every_replica.is_empty() {
        let _ = writeln!(
            md,
            "\n**Every replica at once, not in MTTR**: {}. A bad version promoted to every node \
             is a correlated failure too, with the service up; each RTO is how long one such \
             version served.",
            rto_list(&a.every_replica).join(", ")
        );
    }
    if !a.unrecovered.is_empty() {
        let _ = writeln!(
            md,
            "\n**Not in MTTR**: {} never recovered during the drill; for those faults the \
             repair time is an operator's response time, and this estimate does not cover them.",
            a.unrecovered.join(", ")
        );
    }
    md
}

/// "full-restart (RTO 1.73 s)" for each, or "(never recovered)".
fn rto_list(scenarios: &[(String, Option<f64>)]) -> Vec<String> {
    scenarios
        .iter()
        .map(|(name, rto)| match rto {
            Some(ms) => format!("{name} (RTO {})", fmt_duration(ms / 1000.0)),
            None => format!("{name} (never recovered)"),
        })
        .collect()
}

/// "99.99981 %", with one digit past the first non-nine; past twelve nines an `f64` cannot
/// hold `A` itself, so that case is written from the unavailability.
fn fmt_availability(l: &Level) -> String {
    if l.unavailability <= 0.0 {
        "100 %".into()
    } else if l.nines > 12.0 {
        format!("≈ 100 % (1 − {:.1e})", l.unavailability)
    } else {
        let decimals = (l.nines.ceil() as usize).saturating_sub(1).max(1);
        format!("{:.*} %", decimals, l.availability * 100.0)
    }
}

fn fmt_nines(n: f64) -> String {
    if n.is_infinite() {
        "∞".into()
    } else {
        format!("{n:.2}")
    }
}

/// A duration in the unit that reads best ("60.0 s", "3.6 min", "217 ps" is "2.2e-10 s").
pub fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return format!("{s} s");
    }
    if s == 0.0 {
        "0 s".into()
    } else if s >= 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else if s >= 3600.0 {
        format!("{:.2} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.1} µs", s * 1e6)
    } else {
        format!("{s:.1e} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    fn scenario(name: &str, rto_ms: Option<f64>) -> ScenarioResult {
        ScenarioResult {
            name: name.into(),
            rto_ms,
            ..Default::default()
        }
    }

    /// λ = 12/year, MTTR = 5 s: MTBF = 31 557 600 / 12 = 2 629 800 s (730.5 h),
    /// 1 − A₁ = 5 / 2 629 805 = 1.90128e-6 (5.72 nines, 60.0 s a year);
    /// three replicas: (1 − A₁)³ = 6.87289e-18 (17.16 nines, 2.169e-10 s a year).
    #[test]
    fn report_availability_matches_hand_computed_monthly_failures() {
        let one = level(12.0, 5.0, 1);
        assert!(close(one.unavailability, 1.901_281_65e-6, 1e-8), "{one:?}");
        assert!(close(one.nines, 5.720_953_5, 1e-8));
        assert!(close(one.downtime_s_per_year, 59.999_886, 1e-7));
        let three = level(12.0, 5.0, 3);
        assert!(
            close(three.unavailability, 6.872_889_7e-18, 1e-7),
            "{three:?}"
        );
        assert!(close(three.nines, 17.162_860_6, 1e-8));
        assert!(close(three.downtime_s_per_year, 2.168_919e-10, 1e-6));
    }

    /// λ = 1/year, MTTR = 1 h: A₁ = 8766 / 8767 = 0.99988594 (3.94 nines, 3599.6 s a year);
    /// two replicas: 1 / 8767² = 1.30106e-8 (7.89 nines, 0.41058 s a year).
    #[test]
    fn report_availability_matches_hand_computed_yearly_failures() {
        let one = level(1.0, 3600.0, 1);
        assert!(close(one.availability, 8766.0 / 8767.0, 1e-12));
        assert!(close(one.downtime_s_per_year, 3_599.589_369, 1e-9));
        let two = level(1.0, 3600.0, 2);
        assert!(close(two.unavailability, 1.0 / (8767.0 * 8767.0), 1e-12));
        assert!(close(two.nines, 7.885_702_0, 1e-8));
        assert!(close(two.downtime_s_per_year, 0.410_583_936, 1e-8));
    }

    #[test]
    fn report_availability_uses_the_longest_rto_and_lists_unrecovered() {
        let scenarios = vec![
            scenario("follower-crash", Some(1000.0)),
            scenario("leader-crash", Some(3000.0)),
            scenario("partition", None),
            ScenarioResult {
                outage_expected: true,
                ..scenario("full-restart", Some(9000.0))
            },
            ScenarioResult {
                skipped: Some("not here".into()),
                ..scenario("disk-full", None)
            },
            ScenarioResult {
                every_replica: true,
                ..scenario("bad-model", Some(8000.0))
            },
        ];
        let inputs = AvailabilityInputs {
            failures_per_node_year: 12.0,
            replicas: 3,
        };
        let a = estimate(&inputs, &scenarios).expect("estimate");
        assert_eq!(a.mttr_ms, 3000.0);
        assert_eq!(a.mttr_scenario, "leader-crash");
        assert_eq!(a.mean_rto_ms, 2000.0);
        assert_eq!(a.measured, 2);
        assert_eq!(a.unrecovered, vec!["partition".to_string()]);
        assert_eq!(
            a.whole_outages,
            vec![("full-restart".to_string(), Some(9000.0))]
        );
        assert_eq!(
            a.every_replica,
            vec![("bad-model".to_string(), Some(8000.0))]
        );
        assert!(close(a.mtbf_hours, 730.5, 1e-12));
        assert_eq!(a.cluster, level(12.0, 3.0, 3));

        let md = markdown(&inputs, &scenarios);
        assert!(md.contains("A_N  = 1 − (1 − A₁)^N"), "{md}");
        assert!(md.contains("| single node (1 replica) |"), "{md}");
        assert!(md.contains("| cluster (3 replicas) |"), "{md}");
        assert!(md.contains("**Not in MTTR**: partition"), "{md}");
        assert!(
            md.contains("**Whole-service outages, not in MTTR**: full-restart (RTO 9.00 s)"),
            "{md}"
        );
        assert!(
            md.contains("**Every replica at once, not in MTTR**: bad-model (RTO 8.00 s)"),
            "{md}"
        );
    }

    #[test]
    fn report_availability_degenerate_inputs_do_not_panic() {
        let inputs = |l, n| AvailabilityInputs {
            failures_per_node_year: l,
            replicas: n,
        };
        let measured = vec![scenario("a", Some(0.0))];
        assert!(estimate(&inputs(12.0, 3), &[]).is_err());
        assert!(estimate(&inputs(f64::NAN, 3), &measured).is_err());
        assert!(estimate(&inputs(-1.0, 3), &measured).is_err());
        assert!(estimate(&inputs(12.0, 0), &measured).is_err());
        let zero = estimate(&inputs(12.0, 3), &measured).expect("mttr 0");
        assert_eq!(zero.cluster.unavailability, 0.0);
        assert!(zero.cluster.nines.is_infinite());
        let never_fails = level(0.0, 5.0, 1);
        assert_eq!(never_fails.unavailability, 0.0);
        assert!(markdown(&inputs(12.0, 3), &measured).contains("| 100 % |"));
        assert!(markdown(&inputs(12.0, 3), &[]).contains("Not estimated"));
    }

    #[test]
    fn report_availability_formats() {
        assert_eq!(fmt_duration(59.999_886), "60.00 s");
        assert_eq!(fmt_duration(3599.59), "60.0 min");
        assert_eq!(fmt_duration(3600.0), "1.00 h");
        assert_eq!(fmt_duration(216.0), "3.6 min");
        assert_eq!(fmt_duration(0.41), "410.0 ms");
        assert_eq!(fmt_duration(2.168_919e-10), "2.2e-10 s");
        assert_eq!(fmt_availability(&level(12.0, 5.0, 1)), "99.99981 %");
        assert_eq!(
            fmt_availability(&level(12.0, 5.0, 3)),
            "≈ 100 % (1 − 6.9e-18)"
        );
    }
}
