//! Per-scenario timeline chart, as SVG.
//!
//! Left axis: successful calls and failed calls per second; right axis: p99 latency (ms) of
//! each second; the fault shaded from injection to repair, with a line at each end. One chart
//! tells whether the fault cost throughput, errors or latency, and for how long.
//!
//! Drawn with plotters' SVG backend and no font library: the backend writes text as SVG
//! `<text>` elements that the viewer renders, and plotters' built-in ("naive") font only
//! estimates label sizes for layout. So no fontconfig/freetype and no font file to ship.

use std::io;
use std::ops::Range;

use plotters::prelude::*;

use crate::drill::model::ScenarioResult;
use crate::load::record::Second;

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (900, 400);

const OK_COLOR: RGBColor = RGBColor(31, 119, 180);
const ERR_COLOR: RGBColor = RGBColor(214, 39, 40);
const P99_COLOR: RGBColor = RGBColor(255, 127, 14);
const FAULT_COLOR: RGBColor = RGBColor(148, 103, 189);
const REPAIR_COLOR: RGBColor = RGBColor(44, 160, 44);

/// Legend text of the fault markers (tests look for these in the SVG).
pub const FAULT_START_LABEL: &str = "fault injected";
pub const FAULT_END_LABEL: &str = "fault repaired";

/// The scenario's timeline as a standalone SVG document. Never panics on odd data: an empty
/// timeline or all-zero figures give empty axes with unit ranges, and non-finite fault
/// times leave the markers out. Errors only if plotters itself fails to draw.
pub fn timeline_svg(result: &ScenarioResult) -> io::Result<String> {
    let mut svg = String::new();
    draw(result, &mut svg).map_err(|e| io::Error::other(format!("chart {}: {e}", result.name)))?;
    Ok(svg)
}

fn draw(result: &ScenarioResult, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let tl = &result.timeline;
    // Each second's figures are plotted at its middle, so a second spans [t, t + 1).
    let fault = fault_span(result);
    let x_end = tl
        .iter()
        .map(|s| s.t as f64 + 1.0)
        .chain(fault.iter().map(|f| f.end + 1.0))
        .fold(1.0, f64::max);
    let x: Range<f64> = 0.0..x_end;
    let rate_max = tl
        .iter()
        .map(|s| s.ok.max(errors(s)) as f64)
        .fold(0.0, f64::max);
    let p99_max = tl
        .iter()
        .filter(|s| s.sent > 0)
        .map(|s| s.p99_ms)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y = 0.0..headroom(rate_max);
    let y2 = 0.0..headroom(p99_max);
    let (x_fmt, y_fmt, y2_fmt) = (tick_format(x.end), tick_format(y.end), tick_format(y2.end));

    {
        let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption(result), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .right_y_label_area_size(60)
            .build_cartesian_2d(x.clone(), y.clone())?
            .set_secondary_coord(x.clone(), y2);
        chart
            .configure_mesh()
            .x_desc("seconds since load start")
            .y_desc("calls / s")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart
            .configure_secondary_axes()
            .y_desc("p99 latency (ms)")
            .y_label_formatter(&y2_fmt)
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .draw()?;

        if let Some(f) = fault {
            // Shade first so the series draw over it.
            chart.draw_series(std::iter::once(Rectangle::new(
                [(f.start, y.start), (f.end, y.end)],
                FAULT_COLOR.mix(0.12).filled(),
            )))?;
            let start = format!("{FAULT_START_LABEL} ({:.1} s)", f.start);
            chart
                .draw_series(LineSeries::new(
                    [(f.start, y.start), (f.start, y.end)],
                    FAULT_COLOR.stroke_width(2),
                ))?
                .label(start)
                .legend(|(lx, ly)| {
                    PathElement::new([(lx, ly), (lx + 20, ly)], FAULT_COLOR.stroke_width(2))
                });
            let end = format!("{FAULT_END_LABEL} ({:.1} s)", f.end);
            chart
                .draw_series(LineSeries::new(
                    [(f.end, y.start), (f.end, y.end)],
                    REPAIR_COLOR.stroke_width(2),
                ))?
                .label(end)
                .legend(|(lx, ly)| {
                    PathElement::new([(lx, ly), (lx + 20, ly)], REPAIR_COLOR.stroke_width(2))
                });
        }

        let mid = |s: &Second| s.t as f64 + 0.5;
        chart
            .draw_series(LineSeries::new(
                tl.iter().map(|s| (mid(s), s.ok as f64)),
                OK_COLOR.stroke_width(2),
            ))?
            .label("ok calls / s")
            .legend(|(lx, ly)| {
                PathElement::new([(lx, ly), (lx + 20, ly)], OK_COLOR.stroke_width(2))
            });
        chart
            .draw_series(LineSeries::new(
                tl.iter().map(|s| (mid(s), errors(s) as f64)),
                ERR_COLOR.stroke_width(2),
            ))?
            .label("failed calls / s")
            .legend(|(lx, ly)| {
                PathElement::new([(lx, ly), (lx + 20, ly)], ERR_COLOR.stroke_width(2))
            });

        // Latency only exists for seconds that sent calls: break the line across the others
        // rather than drawing a misleading drop to zero.
        let mut first = true;
        for run in latency_runs(tl) {
            let anno =
                chart.draw_secondary_series(LineSeries::new(run, P99_COLOR.stroke_width(2)))?;
            if std::mem::take(&mut first) {
                anno.label("p99 latency (ms, right axis)")
                    .legend(|(lx, ly)| {
                        PathElement::new([(lx, ly), (lx + 20, ly)], P99_COLOR.stroke_width(2))
                    });
            }
        }

        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 12))
            .draw()?;
        root.present()?;
    }
    Ok(())
}

/// The fault's start and end, when both are usable numbers. An end before the start (a
/// fault never repaired is reported with `end == start` by some runners) is drawn as a
/// line at the start.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: f64,
    end: f64,
}

fn fault_span(r: &ScenarioResult) -> Option<Span> {
    let (start, end) = (r.fault_start_s, r.fault_end_s);
    if !start.is_finite() || !end.is_finite() || start < 0.0 {
        return None;
    }
    Some(Span {
        start,
        end: end.max(start),
    })
}

fn errors(s: &Second) -> u64 {
    s.failed.values().sum()
}

/// A non-empty axis range, the highest point at two thirds of it: the top third is the
/// legend's, so it never hides the data.
fn headroom(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.5
    } else {
        1.0
    }
}

/// Whole numbers on an axis that reaches past 10, one decimal below.
fn tick_format(axis_max: f64) -> impl Fn(&f64) -> String {
    let decimals = if axis_max > 10.0 { 0 } else { 1 };
    move |v| format!("{v:.decimals$}")
}

/// Runs of consecutive seconds that sent calls, as (mid-second, p99) points.
fn latency_runs(tl: &[Second]) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut prev: Option<u64> = None;
    for s in tl.iter().filter(|s| s.sent > 0 && s.p99_ms.is_finite()) {
        let point = (s.t as f64 + 0.5, s.p99_ms);
        match (prev, runs.last_mut()) {
            (Some(p), Some(run)) if s.t == p + 1 => run.push(point),
            _ => runs.push(vec![point]),
        }
        prev = Some(s.t);
    }
    runs
}

/// "leader-crash: SIGKILL node 1 (the leader), ...", cut to fit the chart's width.
fn caption(r: &ScenarioResult) -> String {
    const MAX: usize = 90;
    let text = if r.fault.is_empty() {
        r.name.clone()
    } else {
        format!("{}: {}", r.name, r.fault)
    };
    let text = text.replace(['\n', '\r'], " ");
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn second(t: u64, ok: u64, failed: u64, p99_ms: f64) -> Second {
        let mut f = BTreeMap::new();
        if failed > 0 {
            f.insert("UNAVAILABLE".to_string(), failed);
        }
        Second {
            t,
            sent: ok + failed,
            ok,
            failed: f,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            max_ms: p99_ms * 2.0,
            versions: BTreeMap::new(),
        }
    }

    #[test]
    fn report_chart_has_series_and_fault_markers() {
        let r = ScenarioResult {
            name: "leader-crash".into(),
            fault: "SIGKILL the leader <node 1> & restart".into(),
            fault_start_s: 2.0,
            fault_end_s: 5.0,
            timeline: vec![
                second(0, 100, 0, 3.0),
                second(1, 100, 0, 3.5),
                second(2, 80, 20, 250.0),
                second(3, 0, 0, 0.0),
                second(4, 100, 0, 4.0),
            ],
            ..Default::default()
        };
        let svg = timeline_svg(&r).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.contains(r#"width="900""#) && svg.contains(r#"height="400""#));
        assert!(svg.contains("fault injected (2.0 s)"), "{svg}");
        assert!(svg.contains("fault repaired (5.0 s)"));
        assert!(svg.contains("p99 latency (ms"));
        assert!(
            svg.contains("&lt;node 1&gt; &amp; restart"),
            "text is escaped"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn report_chart_empty_or_zero_or_odd_data_does_not_panic() {
        let empty = ScenarioResult::default();
        assert!(timeline_svg(&empty).expect("empty").starts_with("<svg"));

        let zeros = ScenarioResult {
            timeline: (0..5).map(|t| second(t, 0, 0, 0.0)).collect(),
            ..Default::default()
        };
        assert!(timeline_svg(&zeros).expect("zeros").starts_with("<svg"));

        let odd = ScenarioResult {
            fault_start_s: f64::NAN,
            fault_end_s: f64::INFINITY,
            timeline: vec![second(0, 1, 0, f64::NAN), second(7, 0, 3, f64::INFINITY)],
            ..Default::default()
        };
        let svg = timeline_svg(&odd).expect("odd");
        assert!(!svg.contains(FAULT_START_LABEL));

        let reversed = ScenarioResult {
            fault_start_s: 4.0,
            fault_end_s: 1.0,
            ..Default::default()
        };
        assert!(timeline_svg(&reversed)
            .expect("reversed")
            .contains("fault repaired (4.0 s)"));
    }

    #[test]
    fn report_chart_latency_runs_break_at_idle_seconds() {
        let tl = vec![
            second(0, 1, 0, 1.0),
            second(1, 1, 0, 2.0),
            second(2, 0, 0, 0.0),
            second(3, 1, 0, 3.0),
            second(5, 1, 0, 4.0),
        ];
        let runs = latency_runs(&tl);
        assert_eq!(
            runs,
            vec![
                vec![(0.5, 1.0), (1.5, 2.0)],
                vec![(3.5, 3.0)],
                vec![(5.5, 4.0)]
            ]
        );
    }
}
