//! The objectives check: each scenario's measured figures against the drill's limits.
//!
//! Rules (what `rankload drill` gates on):
//!
//! - **Skipped scenarios get no checks.** Nothing was measured, so nothing can hold or fail;
//!   the report shows them as SKIPPED with the reason.
//! - **Failed requests**: every failed call over the whole scenario (all codes together) must
//!   be at most `max_failed_requests`. The measured text lists the total and each code.
//!   A scenario with `outage_expected` (every node down on purpose) still gets the check,
//!   with its figures, but it always holds: failures there are the point of the scenario,
//!   and its recovery is what RTO and RPO judge.
//! - **RTO**: `rto_ms` must be at most `max_rto_ms`, or the scenario's own `rto_limit_ms`
//!   where it has one (bad-model: its bake window). The runner sets `rto_ms` for every
//!   non-skipped scenario that recovered, so `None` on a scenario that ran means it *never
//!   recovered* within the observation window: the objective is recorded as **not held**.
//!   A missing measurement must never read as a pass. A non-finite or negative RTO is a
//!   measurement bug and fails the same way.
//! - **RPO**: acknowledged promotions lost must be at most `max_rpo`.
//!
//! Checks the runner already pushed (e.g. "wrong answers") are kept. The three checks made
//! here replace any earlier ones of the same name, so calling [`check`] twice (say, after a
//! runner re-measures) does not list an objective twice.

use crate::drill::model::{ObjectiveCheck, Objectives, ScenarioResult};

/// Name of the failed-requests objective.
pub const FAILED_REQUESTS: &str = "failed requests";
/// Name of the recovery-time objective.
pub const RTO: &str = "RTO";
/// Name of the recovery-point objective.
pub const RPO: &str = "RPO";

/// Appends the failed-requests, RTO and RPO checks to `result.objectives` (see the module
/// doc for the rules). Skipped scenarios are left untouched.
pub fn check(result: &mut ScenarioResult, obj: &Objectives) {
    if result.skipped.is_some() {
        return;
    }
    result
        .objectives
        .retain(|o| o.what != FAILED_REQUESTS && o.what != RTO && o.what != RPO);

    let failed = result.failed();
    result.objectives.push(if result.outage_expected {
        ObjectiveCheck {
            what: FAILED_REQUESTS.into(),
            limit: "not gated: whole-service outage on purpose".into(),
            measured: failed_text(result),
            held: true,
        }
    } else {
        ObjectiveCheck {
            what: FAILED_REQUESTS.into(),
            limit: format!("≤ {}", obj.max_failed_requests),
            measured: failed_text(result),
            held: failed <= obj.max_failed_requests,
        }
    });

    let (max_rto_ms, limit) = match result.rto_limit_ms {
        Some(ms) => (ms, format!("≤ {ms:.0} ms (this scenario's own limit)")),
        None => (obj.max_rto_ms, format!("≤ {:.0} ms", obj.max_rto_ms)),
    };
    let (measured, held) = match result.rto_ms {
        Some(ms) if ms.is_finite() && ms >= 0.0 => (format!("{ms:.0} ms"), ms <= max_rto_ms),
        Some(ms) => (format!("invalid measurement ({ms})"), false),
        None => ("never recovered (no RTO measured)".to_string(), false),
    };
    result.objectives.push(ObjectiveCheck {
        what: RTO.into(),
        limit,
        measured,
        held,
    });

    result.objectives.push(ObjectiveCheck {
        what: RPO.into(),
        limit: format!("≤ {} lost acknowledged promotions", obj.max_rpo),
        measured: result.rpo_lost_promotions.to_string(),
        held: result.rpo_lost_promotions <= obj.max_rpo,
    });
}

/// "0", or "12 (DEADLINE_EXCEEDED 2, UNAVAILABLE 10)": the total, then each code in the
/// map's (sorted) order so the text is the same on every run.
pub fn failed_text(result: &ScenarioResult) -> String {
    let total = result.failed();
    let by_code: Vec<String> = result
        .failed_by_code
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    if by_code.is_empty() {
        total.to_string()
    } else {
        format!("{total} ({})", by_code.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(rto_ms: Option<f64>) -> ScenarioResult {
        ScenarioResult {
            name: "leader-crash".into(),
            rto_ms,
            ..Default::default()
        }
    }

    fn get<'a>(r: &'a ScenarioResult, what: &str) -> &'a ObjectiveCheck {
        r.objectives
            .iter()
            .find(|o| o.what == what)
            .unwrap_or_else(|| panic!("no {what} check in {:?}", r.objectives))
    }

    #[test]
    fn report_objectives_all_hold_on_a_clean_recovery() {
        let mut r = ran(Some(1234.4));
        check(&mut r, &Objectives::default());
        assert_eq!(r.objectives.len(), 3);
        assert!(r.objectives.iter().all(|o| o.held), "{:?}", r.objectives);
        assert_eq!(get(&r, RTO).measured, "1234 ms");
        assert_eq!(get(&r, RTO).limit, "≤ 5000 ms");
        assert_eq!(get(&r, FAILED_REQUESTS).measured, "0");
        assert!(r.passed());
    }

    #[test]
    fn report_objectives_failed_requests_counted_by_code() {
        let mut r = ran(Some(10.0));
        r.failed_by_code.insert("UNAVAILABLE".into(), 10);
        r.failed_by_code.insert("DEADLINE_EXCEEDED".into(), 2);
        check(&mut r, &Objectives::default());
        let f = get(&r, FAILED_REQUESTS);
        assert!(!f.held);
        assert_eq!(f.measured, "12 (DEADLINE_EXCEEDED 2, UNAVAILABLE 10)");
        assert!(!r.passed());

        let mut r2 = r.clone();
        let lenient = Objectives {
            max_failed_requests: 12,
            ..Default::default()
        };
        check(&mut r2, &lenient);
        assert!(get(&r2, FAILED_REQUESTS).held);
    }

    #[test]
    fn report_objectives_rto_over_limit_or_missing_fails() {
        let mut slow = ran(Some(5000.1));
        check(&mut slow, &Objectives::default());
        assert!(!get(&slow, RTO).held);

        let mut exact = ran(Some(5000.0));
        check(&mut exact, &Objectives::default());
        assert!(get(&exact, RTO).held, "the limit itself is allowed");

        let mut never = ran(None);
        check(&mut never, &Objectives::default());
        let rto = get(&never, RTO);
        assert!(!rto.held);
        assert!(rto.measured.contains("never recovered"), "{rto:?}");
        assert!(!never.passed());

        let mut nan = ran(Some(f64::NAN));
        check(&mut nan, &Objectives::default());
        assert!(!get(&nan, RTO).held);
    }

    #[test]
    fn report_objectives_expected_outage_reports_failures_without_gating() {
        let mut r = ran(Some(4000.0));
        r.outage_expected = true;
        r.failed_by_code.insert("UNAVAILABLE".into(), 300);
        check(&mut r, &Objectives::default());
        let f = get(&r, FAILED_REQUESTS);
        assert!(f.held);
        assert_eq!(f.measured, "300 (UNAVAILABLE 300)");
        assert!(f.limit.starts_with("not gated"));
        assert!(r.passed());

        r.rto_ms = None;
        check(&mut r, &Objectives::default());
        assert!(!r.passed(), "RTO is still gated");
    }

    #[test]
    fn report_objectives_a_scenario_limit_replaces_the_drills_rto() {
        let mut r = ran(Some(8000.0));
        r.rto_limit_ms = Some(30_000.0);
        check(&mut r, &Objectives::default());
        let rto = get(&r, RTO);
        assert!(rto.held, "{rto:?}");
        assert_eq!(rto.limit, "≤ 30000 ms (this scenario's own limit)");

        r.rto_ms = Some(30_000.1);
        check(&mut r, &Objectives::default());
        assert!(!get(&r, RTO).held);
        r.rto_ms = None;
        check(&mut r, &Objectives::default());
        assert!(!get(&r, RTO).held, "never recovering still fails");
    }

    #[test]
    fn report_objectives_rpo() {
        let mut r = ran(Some(1.0));
        r.rpo_lost_promotions = 1;
        check(&mut r, &Objectives::default());
        assert!(!get(&r, RPO).held);
        assert_eq!(get(&r, RPO).measured, "1");
    }

    #[test]
    fn report_objectives_skipped_get_none_and_runner_checks_are_kept() {
        let mut s = ScenarioResult {
            skipped: Some("needs a local cluster".into()),
            ..Default::default()
        };
        check(&mut s, &Objectives::default());
        assert!(s.objectives.is_empty());
        assert!(s.passed());

        let mut r = ran(Some(1.0));
        r.objectives.push(ObjectiveCheck {
            what: "wrong answers".into(),
            limit: "≤ 0".into(),
            measured: "1".into(),
            held: false,
        });
        check(&mut r, &Objectives::default());
        check(&mut r, &Objectives::default());
        assert_eq!(r.objectives.len(), 4, "{:?}", r.objectives);
        assert_eq!(r.objectives[0].what, "wrong answers");
        assert!(
            !r.passed(),
            "the runner's failed check still fails the scenario"
        );
    }
}
