//! The drill report: Markdown for people, JSON for tools, one SVG timeline per scenario.
//!
//! The runner measures, calls [`objectives::check`] on each scenario (after pushing its own
//! checks such as "wrong answers"), then [`write`]. Writing only renders: it never changes a
//! verdict.
//!
//! Layout for `write(report, dir, "drill")`:
//!
//! ```text
//! dir/drill.md              summary table, per-scenario sections, availability estimate
//! dir/drill.json            the DrillReport, pretty-printed
//! dir/drill-charts/<s>.svg  one per scenario that ran, linked relatively from drill.md
//! ```

pub mod availability;
pub mod chart;
pub mod markdown;
pub mod objectives;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::drill::model::{DrillReport, ScenarioResult};

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub markdown: PathBuf,
    pub json: PathBuf,
    /// One per scenario that ran, in scenario order (skipped scenarios have no chart).
    pub charts: Vec<PathBuf>,
}

/// Writes `<dir>/<stem>.md`, `<dir>/<stem>.json` and `<dir>/<stem>-charts/<scenario>.svg`,
/// creating `dir` if needed. `stem` must be a plain file name (no path separators).
/// Charts are written first and the Markdown last, so a Markdown file on disk never links
/// a chart that is not there.
pub fn write(report: &DrillReport, dir: &Path, stem: &str) -> io::Result<Written> {
    if stem.is_empty() || stem == "." || stem == ".." || stem.contains(['/', '\\']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("report stem {stem:?} must be a plain file name"),
        ));
    }
    fs::create_dir_all(dir)?;
    let charts_dir_name = format!("{stem}-charts");
    let charts_dir = dir.join(&charts_dir_name);

    let names = chart_file_names(&report.scenarios);
    let mut charts = Vec::new();
    let mut links = Vec::with_capacity(report.scenarios.len());
    for (s, name) in report.scenarios.iter().zip(&names) {
        let Some(name) = name else {
            links.push(None);
            continue;
        };
        fs::create_dir_all(&charts_dir)?;
        let path = charts_dir.join(name);
        fs::write(&path, chart::timeline_svg(s)?)?;
        charts.push(path);
        links.push(Some(link_path(&format!("{charts_dir_name}/{name}"))));
    }

    let json = dir.join(format!("{stem}.json"));
    let mut text = serde_json::to_string_pretty(report).map_err(io::Error::other)?;
    text.push('\n');
    fs::write(&json, text)?;

    let md = dir.join(format!("{stem}.md"));
    fs::write(&md, markdown::render(report, &links))?;

    Ok(Written {
        markdown: md,
        json,
        charts,
    })
}

/// One SVG file name per scenario that ran (`None` for skipped ones): the scenario name
/// reduced to `[A-Za-z0-9._-]`, made unique by appending a number (from the scenario's
/// position up) when two names reduce to the same file.
pub fn chart_file_names(scenarios: &[ScenarioResult]) -> Vec<Option<String>> {
    let mut used = BTreeSet::new();
    scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.skipped.is_some() {
                return None;
            }
            let base = safe_file_stem(&s.name);
            let mut name = base.clone();
            let mut n = i + 1;
            while !used.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            Some(format!("{name}.svg"))
        })
        .collect()
}

fn safe_file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "scenario".into()
    } else {
        s.to_string()
    }
}

/// A relative link usable in Markdown: only the characters that would end or break the
/// link target are escaped (the stem is the caller's and may hold a space).
fn link_path(path: &str) -> String {
    path.replace('%', "%25")
        .replace(' ', "%20")
        .replace('(', "%28")
        .replace(')', "%29")
}
