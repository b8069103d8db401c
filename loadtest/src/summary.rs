//! Percentiles of a small sample of timings (milliseconds), as the reports print them.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Writes a report as pretty JSON, creating its directory, and says where.
pub fn write_json(path: &Path, report: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[derive(Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut v: Vec<f64>) -> Summary {
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v[i.min(v.len() - 1)]
        };
        Summary {
            n: v.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: v.last().copied().unwrap_or(0.0),
        }
    }

    pub fn line(&self, what: &str) -> String {
        format!(
            "{what:<34} n={:<3} p50 {:>8.1} ms   p99 {:>8.1} ms   max {:>8.1} ms",
            self.n, self.p50, self.p99, self.max
        )
    }
}
